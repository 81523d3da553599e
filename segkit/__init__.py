"""segkit: semantic segmentation of Cityscapes street scenes, as a course and a toolkit."""

__version__ = "0.1.0"
