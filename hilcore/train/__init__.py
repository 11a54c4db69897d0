"""The HIL training driver: datasets, synthetic data, backbones and the training loop.

Only the public hilcore API is used here. Identity labels read by the dataset
readers serve evaluation and cluster-quality reports, never training.
"""
from .datasets import (IR, RGB, RegDB, Sample, SYSUMM01, ImageList, load_image, load_regdb,
                       load_sysu_mm01)
from .synthetic_people import make_synthetic_regdb, make_synthetic_sysu

__all__ = ["IR", "RGB", "ImageList", "RegDB", "SYSUMM01", "Sample", "load_image", "load_regdb",
           "load_sysu_mm01", "make_synthetic_regdb", "make_synthetic_sysu"]
