"""The config layer: the typed schema of the run configuration, and its checks.

Plain dataclasses with no Hydra in them, so that `data/` and `train/` can both import them.
The entry points register these in Hydra's ConfigStore under the names conf/*.yaml list first
in their defaults; the code below the entry points takes these types, never a DictConfig.
The evaluate, export and generate commands add their own schemas on top of ModelConfig,
DataConfig and LoggerConfig (train/evaluation/config.py, train/inference/config.py).
"""
from conf.checks import MISSING, Problems, check_choice
from conf.data_schema import DataConfig, SampleCorpusConfig
from conf.schema import FinetuneConfig, LoggerConfig, ModelConfig, OptimConfig, TrainerConfig

__all__ = ["MISSING", "DataConfig", "FinetuneConfig", "LoggerConfig", "ModelConfig", "OptimConfig", "Problems",
           "SampleCorpusConfig", "TrainerConfig", "check_choice"]
