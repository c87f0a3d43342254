"""Price books and their effective-dated, bitemporal versions (DESIGN §2, §5).

A version has a valid time (`effective_from`) and a knowledge time (the seq at
which the store recorded it). The version in effect at instant t as known at
K: among versions recorded at or before K with effective_from <= t, the one
with the greatest effective_from; a later-recorded version with the same
effective_from supersedes the earlier (ties go to the greater recorded_seq).
So a correction changes what is computed as known now, while a document
computed as known at its own cutoff still reproduces bit for bit.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from decimal import Decimal
from itertools import pairwise
from typing import Any

from meterline.domain.canonical import content_hash
from meterline.domain.decimals import fmt
from meterline.domain.errors import ErrorCode, MeterlineError
from meterline.domain.money import Currency, Rounding
from meterline.domain.timestamps import format_us
from meterline.pricing.charges import Charge
from meterline.pricing.explanation import VersionRef


@dataclass(frozen=True, kw_only=True)
class VersionSpec:
    """A version as written in a catalog, before the store gives it a seq.

    `content_hash` covers the canonical definition (never the seq), so applying
    the same catalog twice is recognisably a no-op and any change to a recorded
    version is detectable (PRICE_VERSION_IMMUTABLE).
    """

    label: str
    effective_from: int
    charges: tuple[Charge, ...]
    minimum_spend: Decimal | None = None
    minimum_prorate: bool = True
    maximum_spend: Decimal | None = None
    maximum_prorate: bool = True
    supersedes: str | None = None
    reason: str | None = None
    retroactive: bool = False
    content_hash: str = field(init=False, repr=False)

    def __post_init__(self) -> None:
        codes = [charge.code for charge in self.charges]
        if len(set(codes)) != len(codes):
            raise ValueError(f"version {self.label}: charge codes must be unique, got {codes}")
        if (
            self.minimum_spend is not None
            and self.maximum_spend is not None
            and self.minimum_spend > self.maximum_spend
        ):
            raise ValueError(f"version {self.label}: minimum_spend exceeds maximum_spend")
        object.__setattr__(self, "content_hash", content_hash(self.definition()))

    def definition(self) -> dict[str, Any]:
        """The canonical definition, in catalog form; what the content hash covers."""
        data: dict[str, Any] = {
            "version": self.label,
            "effective_from": format_us(self.effective_from),
            "supersedes": self.supersedes,
            "reason": self.reason,
            "retroactive": self.retroactive,
            "minimum_spend": _spend(self.minimum_spend, self.minimum_prorate),
            "charges": [charge.definition() for charge in self.charges],
        }
        if self.maximum_spend is not None:  # absent when unset: older hashes stay the same
            data["maximum_spend"] = _spend(self.maximum_spend, self.maximum_prorate)
        return data

    def charge(self, code: str) -> Charge | None:
        return next((charge for charge in self.charges if charge.code == code), None)

    def recorded(self, seq: int) -> PriceVersion:
        """This version as recorded by the store at `seq`."""
        return PriceVersion(
            label=self.label,
            effective_from=self.effective_from,
            charges=self.charges,
            minimum_spend=self.minimum_spend,
            minimum_prorate=self.minimum_prorate,
            maximum_spend=self.maximum_spend,
            maximum_prorate=self.maximum_prorate,
            supersedes=self.supersedes,
            reason=self.reason,
            retroactive=self.retroactive,
            recorded_seq=seq,
        )


def _spend(amount: Decimal | None, prorate: bool) -> str | dict[str, Any] | None:
    """A spend limit in catalog form: plain text when prorated (the default)."""
    if amount is None:
        return None
    return fmt(amount) if prorate else {"amount": fmt(amount), "prorate": False}


@dataclass(frozen=True, kw_only=True)
class PriceVersion(VersionSpec):
    """A recorded version: its definition plus the seq at which it became known."""

    recorded_seq: int

    def ref(self) -> VersionRef:
        return VersionRef(self.label, self.effective_from, self.content_hash)


@dataclass(frozen=True)
class Segment:
    """A half-open [start, end) piece of time with one version in effect."""

    start: int
    end: int
    version: PriceVersion

    @property
    def duration(self) -> int:
        return self.end - self.start


@dataclass(frozen=True)
class PriceBookSpec:
    """A price book as parsed from a catalog: versions not yet recorded."""

    code: str
    currency: Currency
    rounding: Rounding
    versions: tuple[VersionSpec, ...]


@dataclass(frozen=True)
class PriceBook:
    """A price book with its recorded versions, as known at some point."""

    code: str
    currency: Currency
    rounding: Rounding
    versions: tuple[PriceVersion, ...]

    def __post_init__(self) -> None:
        labels = [version.label for version in self.versions]
        if len(set(labels)) != len(labels):
            raise ValueError(f"price book {self.code}: version labels must be unique")

    def version(self, label: str) -> PriceVersion:
        for version in self.versions:
            if version.label == label:
                return version
        raise KeyError(f"price book {self.code} has no version {label!r}")

    def known_at(self, known_at: int) -> tuple[PriceVersion, ...]:
        return tuple(v for v in self.versions if v.recorded_seq <= known_at)

    def version_at(self, t: int, known_at: int) -> PriceVersion:
        """The version in effect at instant `t` as known at seq `known_at`.

        Raises NO_PRICE_FOR_DATE before the first version: never a guess.
        """
        candidates = [v for v in self.known_at(known_at) if v.effective_from <= t]
        if not candidates:
            raise MeterlineError(
                ErrorCode.NO_PRICE_FOR_DATE,
                f"price book {self.code} has no version in effect at {format_us(t)} "
                f"(as known at seq {known_at})",
                price_book=self.code,
                at=format_us(t),
                known_at=known_at,
            )
        return max(candidates, key=lambda v: (v.effective_from, v.recorded_seq))

    def segments(self, start: int, end: int, known_at: int) -> tuple[Segment, ...]:
        """Split [start, end) into pieces, each with the one version in effect in it.

        A piece ends where a version known at `known_at` takes effect. Empty
        for start == end; NO_PRICE_FOR_DATE if no version is in effect at start.
        """
        if start > end:
            raise ValueError(f"segment start {start} is after end {end}")
        if start == end:
            return ()
        changes = sorted(
            {v.effective_from for v in self.known_at(known_at) if start < v.effective_from < end}
        )
        bounds = [start, *changes, end]
        pieces: list[Segment] = []
        for piece_start, piece_end in pairwise(bounds):
            version = self.version_at(piece_start, known_at)
            if pieces and pieces[-1].version == version:
                pieces[-1] = Segment(pieces[-1].start, piece_end, version)
            else:
                pieces.append(Segment(piece_start, piece_end, version))
        return tuple(pieces)


def split_segments(segments: tuple[Segment, ...], at: int | None) -> tuple[Segment, ...]:
    """The same segments with a boundary at `at` (a trial's end): the piece before and the
    piece after keep their version, so prices do not change, only what is billed of them."""
    if at is None:
        return segments
    out: list[Segment] = []
    for s in segments:
        if s.start < at < s.end:
            out += [Segment(s.start, at, s.version), Segment(at, s.end, s.version)]
        else:
            out.append(s)
    return tuple(out)
