"""LightningDataModules: images (digits, image folders, captioned images), toy 2-D data, gymnasium environments and
reasoning prompts."""

from litzoo.datamodules.captions import ImageCaptionDataModule
from litzoo.datamodules.gym import GymDataModule
from litzoo.datamodules.images import DigitsDataModule, ImageFolderDataModule
from litzoo.datamodules.reasoning import ReasoningDataModule
from litzoo.datamodules.sampling import EpochShuffleSampler, LengthGroupedSampler
from litzoo.datamodules.toy2d import Toy2DDataModule

__all__ = ["GymDataModule", "DigitsDataModule", "EpochShuffleSampler", "ImageCaptionDataModule",
           "ImageFolderDataModule", "LengthGroupedSampler", "ReasoningDataModule", "Toy2DDataModule"]
