"""captag: multi-label classification of images that come with a caption."""

__version__ = "0.1.0"
