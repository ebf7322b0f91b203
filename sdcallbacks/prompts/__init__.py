"""Validation prompts: config entries, YAML/JSON lists and kohya ``.txt`` files."""

from sdcallbacks.prompts.kohya import parse_kohya_line, read_kohya_file
from sdcallbacks.prompts.library import ImageJob, PromptSpec, expand_jobs, load_prompts, resolve_prompts
from sdcallbacks.prompts.names import sanitize_name, unique_names

__all__ = [
    "ImageJob",
    "PromptSpec",
    "expand_jobs",
    "load_prompts",
    "parse_kohya_line",
    "read_kohya_file",
    "resolve_prompts",
    "sanitize_name",
    "unique_names",
]
