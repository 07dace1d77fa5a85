"""One dataset format, atomic deterministic storage and k-step windowing."""
from .dataset import (LOW_LEVEL_KEYS, Dataset, EpisodeRecorder, MisalignedEpisodeError, check_aligned, paired_keys,
                      window_starts)
from .io import atomic_write_bytes, load_npz, save_npz

__all__ = ["LOW_LEVEL_KEYS", "Dataset", "EpisodeRecorder", "MisalignedEpisodeError", "check_aligned", "paired_keys",
           "window_starts", "atomic_write_bytes", "load_npz", "save_npz"]
