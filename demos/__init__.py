"""The demo-video collection tool: collect, validate, export, and the dataset format and reader.

`demos.reader` (the training reader) imports torch; nothing else here does, so collection workers stay light.
"""

from demos.format import (FORMAT_VERSION, DatasetError, DatasetMismatchError, FormatVersionError, ManifestError,
                          ShardError)

__all__ = ["FORMAT_VERSION", "DatasetError", "DatasetMismatchError", "FormatVersionError", "ManifestError", "ShardError"]
