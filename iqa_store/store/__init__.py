"""The Zarr feature store and the registry of feature sets and encoders."""

from iqa_store.store.encoders import EncoderRecord, get_encoder, list_encoders, save_encoder
from iqa_store.store.featureset import DONE, FAILED, PENDING, ChunkResult, FeatureSet
from iqa_store.store.scope import Scope
from iqa_store.store.store import FeatureIdentity, FeatureStore, GcItem, ScopedFeatureError, StoreError, default_root

__all__ = ["ChunkResult", "DONE", "EncoderRecord", "FAILED", "FeatureIdentity", "FeatureSet", "FeatureStore", "GcItem",
           "PENDING", "Scope", "ScopedFeatureError", "StoreError", "default_root", "get_encoder", "list_encoders",
           "save_encoder"]
