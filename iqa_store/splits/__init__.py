"""Train/validation/test splits: the protocol registry, and splits stored in a store.

``PROTOCOLS`` (``protocols.py``) makes splits as a pure function of the protocol settings
and the manifest; ``stored.py`` keeps them under ``STORE/splits`` so that fits and training
stages read the same rows. Only numpy: importing this package imports no model library.
"""

from iqa_store.splits.protocols import (PROTOCOLS, ProtocolSpec, Split, make_splits, splits_from_json, splits_key,
                                        splits_to_json)
from iqa_store.splits.stored import StoredSplits, list_stored_splits, stored_splits

__all__ = ["PROTOCOLS", "ProtocolSpec", "Split", "StoredSplits", "list_stored_splits", "make_splits",
           "splits_from_json", "splits_key", "splits_to_json", "stored_splits"]
