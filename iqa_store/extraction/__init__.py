"""Extraction: a dataset manifest and an extractor in, a feature set in the store out.

``runner`` computes row chunks (cached, resumable, sharded), ``cluster`` runs the shards as
Dask tasks, ``weights`` resolves where an extractor's weights come from (a registry encoder,
a local file or the published tag). Importing this package does not import torch.
"""
