"""The rule data model: vocabularies, :class:`Rule`, :class:`Hit` and :class:`RuleError`.

Everything here is plain, immutable data so a compiled rule set can be shared between threads
and swapped atomically by replacing one reference.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

__all__ = [
    "CATEGORIES",
    "DEFAULT_LIBRARY",
    "EXCLUSION_SCOPES",
    "GROUPS",
    "ILLEGAL_CATEGORIES",
    "PRONOUN_MODES",
    "SOURCES",
    "Combo",
    "Hit",
    "Rule",
    "RuleError",
]

#: Where a rule may look: typed phrases, the active window's title, removable media.
SOURCES: tuple[str, ...] = ("keys", "window", "media")

#: Age bands / user groups a rule can apply to.
GROUPS: tuple[str, ...] = ("primary", "secondary", "sixth_form", "staff")

#: Category id -> human label. Covers the UK Safer Internet Centre monitoring list.
CATEGORIES: dict[str, str] = {
    "csam": "Child sexual abuse material (illegal)",
    "grooming": "Grooming",
    "sexual_exploitation": "Sexual exploitation / sextortion",
    "radicalisation": "Radicalisation / extremism",
    "suicide": "Suicide",
    "self_harm": "Self-harm",
    "eating_disorders": "Eating disorders",
    "bullying": "Bullying",
    "abuse_disclosure": "Abuse disclosure",
    "violence_weapons": "Violence / weapons",
    "drugs": "Drugs",
    "pornography": "Pornography",
    "gambling": "Gambling",
    "discrimination_hate": "Discrimination / hate",
    "circumvention": "Circumvention (VPN, proxy, unblocked sites)",
}

#: Categories where copying the evidence may itself be an offence: never screenshot.
ILLEGAL_CATEGORIES: frozenset[str] = frozenset({"csam"})

#: The default rule library shipped with Vigil (one TOML file per category).
DEFAULT_LIBRARY: Path = Path(__file__).resolve().parent / "library"

#: ``pronouns``: "" (phrases mean what they say), "third" ("myself" also reads as himself,
#: herself, themself, themselves) or "all" (third plus yourself, yourselves, urself).
PRONOUN_MODES: tuple[str, ...] = ("", "third", "all")

#: ``exclusion_scope``: "overlap" (an exclusion cancels only what it overlaps, as in the
#: streaming matcher) or "context" (an exclusion anywhere in the context cancels the rule).
EXCLUSION_SCOPES: tuple[str, ...] = ("overlap", "context")


@dataclass(frozen=True)
class Combo:
    """A combination: adds ``weight`` to the score only when every part is in the context."""

    parts: tuple[str, ...]
    weight: int


@dataclass(frozen=True)
class Rule:
    """One detection rule. ``screenshot`` is always False for :data:`ILLEGAL_CATEGORIES`.

    v2 fields (all optional; a v1 rule leaves them at their defaults): ``weights`` and
    ``combos`` score a whole context in the context layer (``RuleSet.evaluate``), which fires
    the rule when the score reaches its threshold: ``thresholds`` per group, else
    ``threshold``. ``phrases`` still fire alone, in both layers.
    """

    id: str
    category: str
    severity: int
    phrases: tuple[str, ...]
    exclusions: tuple[str, ...] = ()
    sources: frozenset[str] = frozenset(SOURCES)
    groups: frozenset[str] = frozenset(GROUPS)
    language: str = "en"
    screenshot: bool = True
    on_mount: bool = False
    weights: tuple[tuple[str, int], ...] = ()
    combos: tuple[Combo, ...] = ()
    threshold: int | None = None
    thresholds: tuple[tuple[str, int], ...] = ()  # (group, threshold), in GROUPS order
    pronouns: str = ""  # one of PRONOUN_MODES
    exclusion_scope: str = "overlap"  # one of EXCLUSION_SCOPES

    def __post_init__(self) -> None:
        if self.category in ILLEGAL_CATEGORIES and self.screenshot:
            object.__setattr__(self, "screenshot", False)

    def applies(self, source: str, group: str | None) -> bool:
        """True when this rule watches ``source`` for ``group`` (None = any group)."""
        return source in self.sources and (group is None or group in self.groups)

    @property
    def weighted(self) -> bool:
        """True when the rule scores contexts (has weights or combos)."""
        return bool(self.weights or self.combos)

    def threshold_for(self, group: str | None) -> int | None:
        """The score this rule needs for ``group``: its ``thresholds`` entry, else
        ``threshold``. For an unknown group (None), the lowest of them: the rule fires if it
        would fire for some group. None when the rule does not score."""
        per = dict(self.thresholds)
        if group is None:
            got = [per.get(g, self.threshold) for g in self.groups]
            return min((t for t in got if t is not None), default=None)
        return per.get(group, self.threshold)


@dataclass(frozen=True)
class Hit:
    """A rule that matched: the text as typed and a bounded window of the original text.

    ``score`` is the weighted score (context layer) or the scorer's probability (model
    layer); ``reasons`` say in words why it fired, for the DSL ("'how many' +4",
    "model 20261201: suicide 0.93"). Streaming phrase hits leave both empty.
    """

    rule: Rule
    match: str
    context: str
    match_kind: str  # "exact" | "normalised"
    score: float | None = None
    reasons: tuple[str, ...] = ()


class RuleError(ValueError):
    """A rule file (or bundle rule) is invalid. Names the file, line, rule id and the fix.

    ``errors`` holds every problem found when a whole library was checked; the message is the
    first one (plus a count), so a technician can fix them in one pass.
    """

    def __init__(
        self,
        file: str,
        line: int | None,
        rule_id: str | None,
        hint: str,
        errors: tuple[RuleError, ...] = (),
    ) -> None:
        self.file, self.line, self.rule_id, self.hint = file, line, rule_id, hint
        self.errors: tuple[RuleError, ...] = errors or (self,)
        where = file if line is None else f"{file}:{line}"
        who = f" rule {rule_id!r}:" if rule_id else ""
        more = f" (and {len(self.errors) - 1} more problem(s))" if len(self.errors) > 1 else ""
        super().__init__(f"{where}:{who} {hint}{more}")

    def one_line(self) -> str:
        """This error alone, without the 'and N more' suffix."""
        where = self.file if self.line is None else f"{self.file}:{self.line}"
        who = f" rule {self.rule_id!r}:" if self.rule_id else ""
        return f"{where}:{who} {self.hint}"
