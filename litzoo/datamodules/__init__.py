"""LightningDataModules: images, toy 2-D data, (later) gymnasium environments and reasoning prompts."""

from litzoo.datamodules.gym import GymDataModule
from litzoo.datamodules.images import DigitsDataModule, ImageFolderDataModule
from litzoo.datamodules.reasoning import ReasoningDataModule
from litzoo.datamodules.sampling import EpochShuffleSampler, LengthGroupedSampler
from litzoo.datamodules.toy2d import Toy2DDataModule

__all__ = ["GymDataModule", "DigitsDataModule", "EpochShuffleSampler", "ImageFolderDataModule", "LengthGroupedSampler", "ReasoningDataModule", "Toy2DDataModule"]
