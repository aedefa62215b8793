"""Encoding: relative-index sparse storage, entropy coding, and the .dz container (docs/format.md)."""

from .api import decode_bytes, decode_records, encode_model, load, load_checked, model_for, open_file, read, save
from .container import ChecksumError, TruncatedFileError, UnsupportedVersionError
from .huffman import canonical_codes, code_lengths
from .report import build_report, format_streams, format_table
from .schema import ModelFitError, check_fits, check_header
from .sparse import positions_from_gaps, relative_indices
from .streams import decode_stream, encode_stream

__all__ = ["ChecksumError", "ModelFitError", "TruncatedFileError", "UnsupportedVersionError", "build_report",
           "canonical_codes", "check_fits", "check_header", "code_lengths", "decode_bytes", "decode_records",
           "decode_stream", "encode_model", "encode_stream", "format_streams", "format_table", "load", "load_checked",
           "model_for", "open_file", "positions_from_gaps", "read", "relative_indices", "save"]
