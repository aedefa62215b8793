"""Encoding: relative-index sparse storage, entropy coding, and the .dz container (docs/format.md)."""

from .api import decode_bytes, decode_records, encode_model, fill, load, model_for, open_file, read, save
from .container import ChecksumError, TruncatedFileError, UnsupportedVersionError
from .huffman import canonical_codes, code_lengths
from .report import build_report, format_streams, format_table
from .sparse import positions_from_gaps, relative_indices
from .streams import decode_stream, encode_stream

__all__ = ["ChecksumError", "TruncatedFileError", "UnsupportedVersionError", "build_report", "canonical_codes",
           "code_lengths", "decode_bytes", "decode_records", "decode_stream", "encode_model", "encode_stream", "fill", "format_streams",
           "format_table", "load", "model_for", "open_file", "positions_from_gaps", "read", "relative_indices", "save"]
