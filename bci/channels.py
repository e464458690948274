"""Channel sets: normalised names, types, positions, and mapping between montages.

A :class:`ChannelSet` is what the application knows about the channels of a recording
or a model. Names are normalised so that recordings from different labs compare equal
(``'EEG Fp1-Ref'``, ``'FP1'`` and ``'Fp1.'`` are all ``'Fp1'``; the old 10-20 names
T3/T4/T5/T6 become T7/T8/P7/P8). :meth:`ChannelSet.plan_mapping` says how a recording
maps onto a target set (picked, reordered, interpolated, dropped) and
:func:`map_channels` applies it; nothing is ever padded or truncated silently.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from functools import lru_cache

import mne
import numpy as np

from .errors import DataError

#: Old 10-20 names and their modern (10-10) equivalents.
ALIASES = {"T3": "T7", "T4": "T8", "T5": "P7", "T6": "P8"}
_ALIASES_UPPER = {k.upper(): v for k, v in ALIASES.items()}

#: Channel types that carry brain signal (what a model may read).
DATA_TYPES = ("eeg", "seeg", "ecog", "dbs")
#: Channel contracts, narrowest first (see :class:`ChannelContract`).
CONTRACTS = ("fixed", "any-of-type", "any")

_PREFIX = re.compile(r"^(EEG|ECOG|SEEG|EOG|ECG|EMG)[\s_:-]+", re.IGNORECASE)
_SUFFIX = re.compile(r"[-_ ]?(REF|LE|AVG|AR|A1|A2|M1|M2)$", re.IGNORECASE)


@lru_cache(maxsize=1)
def _standard_positions() -> dict[str, np.ndarray]:
    """Electrode positions (metres, head frame) of MNE's standard 10-05 montage."""

    # MNE 1.13 renamed "standard_1005" (same positions) to "colin27_1005".
    name = "colin27_1005" if "colin27_1005" in mne.channels.get_builtin_montages() else "standard_1005"
    montage = mne.channels.make_standard_montage(name)
    return {name: np.asarray(pos) for name, pos in montage.get_positions()["ch_pos"].items()}


@lru_cache(maxsize=1)
def _canonical_case() -> dict[str, str]:
    return {name.upper(): name for name in _standard_positions()}


def normalize_name(name: str) -> str:
    """Return the canonical spelling of a channel name.

    Strips type prefixes (``'EEG '``), reference suffixes (``'-Ref'``, ``'-LE'``) and the
    dots PhysioNet pads names with, maps old 10-20 aliases (T3->T7, ...) and restores the
    standard case (``'FP1'`` -> ``'Fp1'``). Names that are not 10-05 electrodes
    (iEEG contacts, ``'SP1'``) keep their stripped spelling.
    """
    text = str(name).strip().strip(".").strip()
    text = _PREFIX.sub("", text)
    suffix = _SUFFIX.search(text)
    if suffix and suffix.start() > 0 and _is_reference_suffix(text[: suffix.start()], suffix.group(0)):
        text = text[: suffix.start()]
    text = text.strip().strip(".-_ ")
    upper = text.upper()
    alias = _ALIASES_UPPER.get(upper)
    if alias:
        return alias
    return _canonical_case().get(upper, text)


def _is_reference_suffix(head: str, suffix: str) -> bool:
    """A reference suffix follows a separator (``'C3-A1'``) or a 10-05 name (``'FP1REF'``);
    otherwise it is part of the name (the sEEG contact ``'LA1'`` is not ``'L'`` + ``'A1'``)."""
    name = head.strip(".-_ ").upper()
    return suffix[0] in "-_ " or name in _canonical_case() or name in _ALIASES_UPPER


@dataclass(frozen=True)
class ChannelSet:
    """Names (normalised), types and positions of a set of channels.

    Parameters
    ----------
    names : sequence of str
        Channel names; normalised with :func:`normalize_name`.
    types : sequence of str, optional
        MNE channel types (``'eeg'``, ``'seeg'``, ``'ecog'``, ``'eog'``, ``'stim'``...).
        Defaults to ``'eeg'`` for every channel.
    positions : dict, optional
        Name -> 3-D position in metres (head frame). When omitted, positions of
        standard 10-05 electrodes are filled in from MNE's montage.
    """

    names: tuple[str, ...]
    types: tuple[str, ...] = ()
    positions: dict = field(default_factory=dict, compare=False)
    original_names: tuple[str, ...] = field(default=(), compare=False)

    def __init__(self, names, types=None, positions=None):
        original = tuple(str(n) for n in names)
        normalised = tuple(normalize_name(n) for n in original)
        seen: dict[str, int] = {}
        for i, n in enumerate(normalised):
            if n in seen:
                raise DataError(
                    f"channels {original[seen[n]]!r} and {original[i]!r} both normalise to "
                    f"{n!r}; rename one of them"
                )
            seen[n] = i
        types = tuple(types) if types is not None else ("eeg",) * len(normalised)
        if len(types) != len(normalised):
            raise DataError(f"{len(normalised)} channel names but {len(types)} channel types")
        pos: dict[str, np.ndarray] = {}
        standard = _standard_positions()
        for n, t in zip(normalised, types):
            if positions and (n in positions or normalize_name(n) in positions):
                p = np.asarray(positions.get(n, positions.get(normalize_name(n))), float)
                if p.shape == (3,) and np.all(np.isfinite(p)) and np.linalg.norm(p) > 0:
                    pos[n] = p
            elif t == "eeg" and n in standard:
                pos[n] = standard[n]
        object.__setattr__(self, "names", normalised)
        object.__setattr__(self, "types", types)
        object.__setattr__(self, "positions", pos)
        object.__setattr__(self, "original_names", original)

    @classmethod
    def from_info(cls, info) -> "ChannelSet":
        """Build from an :class:`mne.Info` (types and digitised positions kept)."""
        positions = {}
        for ch in info["chs"]:
            loc = np.asarray(ch["loc"][:3], float)
            if np.all(np.isfinite(loc)) and np.linalg.norm(loc) > 0:
                positions[normalize_name(ch["ch_name"])] = loc
        types = info.get_channel_types()
        return cls(info["ch_names"], types, positions)

    def __len__(self) -> int:
        return len(self.names)

    def __iter__(self):
        return iter(self.names)

    def __contains__(self, name) -> bool:
        return normalize_name(name) in self.names

    def index(self, name: str) -> int:
        return self.names.index(normalize_name(name))

    def pick(self, indices) -> "ChannelSet":
        """The channels at ``indices`` (names, types and positions kept)."""
        return ChannelSet([self.original_names[i] for i in indices], [self.types[i] for i in indices], self.positions)

    def to_info(self, sfreq: float):
        """An :class:`mne.Info` with these channels, types and known positions."""

        info = mne.create_info(list(self.names), float(sfreq), list(self.types))
        if self.positions:
            montage = mne.channels.make_dig_montage(
                ch_pos={n: p for n, p in self.positions.items()}, coord_frame="head"
            )
            info.set_montage(montage, on_missing="ignore")
        return info

    def plan_mapping(self, target: "ChannelSet | list[str]", *, interpolate: bool = True) -> "ChannelMapping":
        """Plan how signals with these channels become signals with ``target``'s.

        Channels present in both are picked in the target's order; target channels that
        are missing here are interpolated with spherical splines when ``interpolate`` and
        positions exist for them and for enough present channels; otherwise a
        :class:`DataError` lists what is missing. Extra channels are dropped (reported).
        """
        target = target if isinstance(target, ChannelSet) else ChannelSet(target)
        present = [n for n in target.names if n in self.names]
        missing = [n for n in target.names if n not in self.names]
        dropped = [n for n in self.names if n not in target.names]
        if missing:
            placed = [n for n in missing if n in target.positions]
            usable = [n for n in present if n in self.positions]
            if not interpolate or len(placed) < len(missing) or len(usable) < 3:
                raise DataError(_missing_message(missing, placed, len(target), len(usable), interpolate))
        return ChannelMapping(source=self, target=target, picked=present, interpolated=missing, dropped=dropped)


def _missing_message(missing: list[str], placed: list[str], n_target: int, n_usable: int, interpolate: bool) -> str:
    """Why target channels cannot be made: which are missing, which could be interpolated."""
    unplaced = [n for n in missing if n not in placed]
    text = f"{len(missing)} of {n_target} target channels are missing from the recording ({', '.join(missing)})"
    if not interpolate:
        return f"{text} and interpolation is off"
    if unplaced:
        text += f"; {len(unplaced)} cannot be interpolated: no electrode positions for {', '.join(unplaced)}"
    if placed:
        text += f"; {len(placed)} could be interpolated ({', '.join(placed)})"
        if n_usable < 3:
            text += f" but only {n_usable} present channels have positions (at least 3 needed)"
    return text


@dataclass(frozen=True)
class ChannelContract:
    """Which channels a model reads: its channel contract, saved with it.

    ``kind``:
    - ``"fixed"``: these channels in this order (the model's ``input_channels``; a
      recording is mapped onto them, missing ones interpolated where positions allow);
    - ``"any"``: every data channel of the recording (types :data:`DATA_TYPES`), any
      number, in the recording's order (channel-independent or channel-agnostic models);
    - ``"any-of-type"``: every channel of the recording whose type is one of ``types``.
    """

    kind: str = "fixed"
    types: tuple[str, ...] = DATA_TYPES

    def __post_init__(self):
        if self.kind not in CONTRACTS:
            raise DataError(f"channels_contract: expected one of {', '.join(CONTRACTS)}, found {self.kind!r}")
        types = tuple(self.types) if isinstance(self.types, (list, tuple)) else self.types
        if not (isinstance(types, tuple) and types and all(isinstance(t, str) and t in DATA_TYPES for t in types)):
            raise DataError(f"channel types: expected a non-empty list of {', '.join(DATA_TYPES)}, found {self.types!r}")
        object.__setattr__(self, "types", types if self.kind == "any-of-type" else DATA_TYPES)

    @classmethod
    def from_json(cls, value: dict) -> "ChannelContract":
        return cls(value.get("kind"), value.get("types", DATA_TYPES))

    def to_json(self) -> dict:
        return {"kind": self.kind, "types": list(self.types)}

    def restrict(self, kind: str | None, types=None) -> "ChannelContract":
        """This contract narrowed by a config (``fixed`` < ``any-of-type`` < ``any``); never widened."""
        wanted = ChannelContract(kind or self.kind, types or self.types)
        if CONTRACTS.index(wanted.kind) > CONTRACTS.index(self.kind) or not set(wanted.types) <= set(self.types):
            raise DataError(
                f"channels_contract: the model reads {self.describe()}; it cannot be widened to {wanted.describe()}"
            )
        return wanted

    def describe(self, names=()) -> str:
        """``'any channels'``, ``'any ecog/seeg channels'``, ``'fixed channels'``; with the
        channels read: ``'21 fixed channels (Fp1, Fp2, ...)'``, ``'84 channels (any: G1, ...)'``."""
        kind = "fixed" if self.kind == "fixed" else f"any {'/'.join(self.types)}" if self.kind == "any-of-type" else "any"
        if not names:
            return f"{kind} channels"
        shown = ", ".join(list(names)[:4]) + (", ..." if len(names) > 4 else "")
        return f"{len(names)} fixed channels ({shown})" if self.kind == "fixed" else f"{len(names)} channels ({kind}: {shown})"

    def select(self, channels: ChannelSet) -> ChannelSet:
        """The channels of ``channels`` this contract reads (all of a fixed one)."""
        if self.kind == "fixed":
            return channels
        keep = [i for i, t in enumerate(channels.types) if t in self.types]
        if not keep:
            found = ", ".join(sorted(set(channels.types))) or "none"
            raise DataError(f"expected channels of type {' or '.join(self.types)}; found types {found}")
        return channels.pick(keep)


@dataclass
class ChannelMapping:
    """The plan of :meth:`ChannelSet.plan_mapping`; :meth:`report` says what it does."""

    source: ChannelSet
    target: ChannelSet
    picked: list[str]
    interpolated: list[str]
    dropped: list[str]
    _matrix: np.ndarray | None = None

    def report(self) -> str:
        parts = [f"picked {len(self.picked)}"]
        if self.interpolated:
            parts.append(f"interpolated {len(self.interpolated)} ({', '.join(self.interpolated)})")
        if self.dropped:
            shown = ", ".join(self.dropped[:10]) + (" ..." if len(self.dropped) > 10 else "")
            parts.append(f"dropped {len(self.dropped)} ({shown})")
        reordered = [n for n in self.source.names if n in self.target.names] != self.picked
        if reordered:
            parts.append("reordered")
        return "channel mapping: " + "; ".join(parts)

    @property
    def matrix(self) -> np.ndarray:
        """(n_target, n_source) linear operator: selection rows and spline rows."""
        if self._matrix is None:
            src = self.source.names
            m = np.zeros((len(self.target), len(src)))
            for i, name in enumerate(self.target.names):
                if name in self.picked:
                    m[i, src.index(name)] = 1.0
            if self.interpolated:
                m[[self.target.index(n) for n in self.interpolated]] = self._spline_rows()
            self._matrix = m
        return self._matrix

    def _spline_rows(self) -> np.ndarray:
        """Rows of MNE's spherical-spline interpolation for the missing channels.

        Interpolation is linear, so interpolating an identity signal with
        :meth:`mne.io.Raw.interpolate_bads` yields the operator itself.
        """

        usable = [n for n in self.picked if n in self.source.positions]
        names = usable + self.interpolated
        positions = {n: self.source.positions[n] for n in usable}
        positions.update({n: self.target.positions[n] for n in self.interpolated})
        info = ChannelSet(names, ["eeg"] * len(names), positions).to_info(1.0)
        eye = np.vstack([np.eye(len(usable)), np.zeros((len(self.interpolated), len(usable)))])
        raw = mne.io.RawArray(eye, info, verbose="error")
        raw.info["bads"] = list(self.interpolated)
        raw.interpolate_bads(reset_bads=True, origin="auto", verbose="error")
        rows = np.zeros((len(self.interpolated), len(self.source)))
        cols = [self.source.index(n) for n in usable]
        rows[:, cols] = raw.get_data()[len(usable):]
        return rows

    def apply(self, data: np.ndarray) -> np.ndarray:
        """Map ``(..., n_source, n_times)`` signals to ``(..., n_target, n_times)``."""
        data = np.asarray(data)
        if data.shape[-2] != len(self.source):
            raise DataError(
                f"expected {len(self.source)} channels along axis -2, found {data.shape[-2]}"
            )
        if not self.interpolated:
            idx = [self.source.index(n) for n in self.target.names]
            return data[..., idx, :]
        return np.einsum("ts,...sn->...tn", self.matrix, data)


def map_channels(data: np.ndarray, source: ChannelSet, target: ChannelSet, *, interpolate: bool = True):
    """Map signals from ``source`` to ``target`` channels; returns ``(data, report)``."""
    mapping = source.plan_mapping(target, interpolate=interpolate)
    return mapping.apply(data), mapping.report()
