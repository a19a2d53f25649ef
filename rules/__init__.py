"""Vigil's rule language: rule files, the text normaliser, the streaming matcher, the context
layer (``RuleSet.evaluate``) and signed rule bundles. Used by both the agent and the
collector; see docs/design/interfaces.md and docs/rules-language.md."""

from .bundle import BundleError, BundleInfo, compile_bundle, generate_signing_key, load_bundle
from .context import merge_by_rule
from .library import load_library
from .matcher import StreamMatcher
from .model import (
    CATEGORIES,
    DEFAULT_LIBRARY,
    GROUPS,
    ILLEGAL_CATEGORIES,
    SOURCES,
    Combo,
    Hit,
    Rule,
    RuleError,
)
from .ruleset import RuleSet

__all__ = [
    "CATEGORIES",
    "DEFAULT_LIBRARY",
    "GROUPS",
    "ILLEGAL_CATEGORIES",
    "SOURCES",
    "BundleError",
    "BundleInfo",
    "Combo",
    "Hit",
    "Rule",
    "RuleError",
    "RuleSet",
    "StreamMatcher",
    "compile_bundle",
    "generate_signing_key",
    "load_bundle",
    "load_library",
    "merge_by_rule",
]
