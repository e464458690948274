"""Recordings: one object for a continuous multichannel signal, from any file family.

:func:`load_recording` reads every MNE-readable format (EDF/BDF/GDF, FIF, EEGLAB
``.set``, BrainVision ``.vhdr``) and the two text formats of the shared data:

- **Bonn** segments (Andrzejak et al. 2001): one integer sample per line, 4097 samples at
  173.61 Hz, microvolts; set letter from the file name (Z, O: scalp; N, F, S: intracranial).
- **Malow** recording: a folder of ``chNN.inp`` files (one integer per line, 100 Hz), the
  channel names in ``ChannelsSeizureData.csv``; pass the folder or any of its ``.inp``
  files.

Channel types: EDF/BDF labels with a type prefix (``'ECOG G1'``, ``'SEEG LA1'``) give the
type; a BIDS recording (``sub-..._ieeg.edf`` with its ``channels.tsv``) is read through
mne-bids, so ``channels.tsv`` gives types and bad channels and ``electrodes.tsv`` positions.
Channels the header or sidecar marks bad are excluded, with a logged warning.

Signals are kept in volts (MNE's convention). No patient identifiers from file headers
are copied into a :class:`Recording`: provenance keeps only the path, format and reader.
"""

from __future__ import annotations

import csv
import logging
import re
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import mne
import numpy as np
from mne_bids import get_bids_path_from_fname, read_raw_bids

from .channels import ChannelSet
from .errors import DataError

log = logging.getLogger(__name__)

MNE_EXTENSIONS = {".edf", ".bdf", ".gdf", ".fif", ".set", ".vhdr"}
#: Starts of MNE's warnings that a file is cut short or damaged (FIF tags, tag directory).
MNE_CORRUPTION = ("Invalid tag with only", "FIF tag directory missing")
BONN_SFREQ = 173.61
BONN_SAMPLES = 4097
MALOW_SFREQ = 100.0
#: Bonn set letter (first letter of the file name) -> channel type.
BONN_TYPES = {"Z": "eeg", "O": "eeg", "N": "seeg", "F": "seeg", "S": "seeg"}


@dataclass
class Recording:
    """A continuous recording: ``data`` is ``(n_channels, n_times)`` in volts.

    ``annotations`` is an :class:`mne.Annotations`; ``provenance`` says where the data
    came from (path, format, reader, unit conversion) without subject identifiers.
    """

    data: np.ndarray
    sfreq: float
    channels: ChannelSet
    annotations: object = None
    provenance: dict = field(default_factory=dict)

    def __post_init__(self):
        self.data = np.asarray(self.data, dtype=np.float64)
        self.sfreq = float(self.sfreq)
        if self.data.ndim != 2:
            raise DataError(f"signals must be (n_channels, n_times), found shape {self.data.shape}")
        if self.data.shape[0] != len(self.channels):
            raise DataError(
                f"{self.data.shape[0]} signal rows but {len(self.channels)} channel names"
            )
        if self.data.shape[1] == 0 or self.data.shape[0] == 0:
            raise DataError(f"empty recording ({self.data.shape[0]} channels x {self.data.shape[1]} samples)")
        if not np.isfinite(self.sfreq) or self.sfreq <= 0:
            raise DataError(f"sampling rate must be a positive number of Hz, found {self.sfreq}")
        if self.annotations is None:
            self.annotations = mne.Annotations([], [], [])

    @property
    def n_times(self) -> int:
        return self.data.shape[1]

    @property
    def duration(self) -> float:
        return self.n_times / self.sfreq

    @classmethod
    def from_raw(cls, raw, provenance: dict | None = None) -> "Recording":
        """Build from an :class:`mne.io.Raw` (data in volts, annotations kept)."""
        return cls(
            data=raw.get_data(),
            sfreq=raw.info["sfreq"],
            channels=ChannelSet.from_info(raw.info),
            annotations=raw.annotations.copy(),
            provenance=dict(provenance or {}),
        )

    def to_raw(self):
        """An :class:`mne.io.RawArray` with these signals, channels and annotations."""

        raw = mne.io.RawArray(self.data, self.channels.to_info(self.sfreq), verbose="error")
        if self.annotations.orig_time is not None:  # annotations anchored to the recording start
            raw.set_meas_date(self.annotations.orig_time)
        raw.set_annotations(self.annotations)
        return raw

    def channel_flags(self, *, flat_uv: float = 0.1, clip_fraction: float = 0.005) -> dict[str, list[str]]:
        """Per-channel problems: ``{'Fp1': ['flat'], 'T7': ['nan 12.5%'], ...}``.

        A channel is *flat* when its peak-to-peak (ignoring NaNs) is below ``flat_uv``
        microvolts, *nan* when it holds NaN or infinite samples (with the fraction), and
        *clipped* when more than ``clip_fraction`` of its samples sit at its extreme values
        in runs of at least 3 (an amplifier at saturation). Only EEG-like channels
        (eeg, seeg, ecog, eog, emg, ecg, misc) are checked; stim channels are skipped.
        """
        flags: dict[str, list[str]] = {}
        for name, kind, x in zip(self.channels.names, self.channels.types, self.data):
            if kind in ("stim", "syst"):
                continue
            found = []
            bad = ~np.isfinite(x)
            if bad.any():
                found.append(f"nan {100 * bad.mean():.3g}%")
            good = x[~bad]
            if good.size == 0 or np.ptp(good) < flat_uv * 1e-6:
                found.append("flat")
            elif _clipped_fraction(good) > clip_fraction:
                found.append("clipped")
            if found:
                flags[name] = found
        return flags


def _clipped_fraction(x: np.ndarray) -> float:
    """Fraction of samples in runs (>= 3) at the signal's minimum or maximum value."""
    hits = (x == x.max()) | (x == x.min())
    if hits.sum() < 3:
        return 0.0
    # keep samples whose run of consecutive hits is at least 3 long
    padded = np.concatenate([[False], hits, [False]])
    edges = np.flatnonzero(np.diff(padded.astype(np.int8)))
    starts, stops = edges[::2], edges[1::2]
    long_runs = (stops - starts) >= 3
    return float((stops - starts)[long_runs].sum()) / x.size


def _read_numeric_column(path: Path) -> np.ndarray:
    """One number per line; a clear error names the first line that is not a number."""
    try:
        lines = path.read_text().splitlines()
    except UnicodeDecodeError:
        raise DataError(f"{path}: not a text file (expected one number per line)") from None
    values = np.empty(len(lines))
    n = 0
    for i, line in enumerate(lines, 1):
        text = line.strip()
        if not text:
            continue
        try:
            values[n] = float(text)
        except ValueError:
            raise DataError(f"{path}, line {i}: expected one number per line, found {text[:40]!r}") from None
        n += 1
    if n == 0:
        raise DataError(f"{path}: empty recording (no samples)")
    return values[:n]


def _load_bonn(path: Path) -> Recording:
    samples = _read_numeric_column(path)
    if samples.size != BONN_SAMPLES:
        raise DataError(
            f"{path}: a Bonn segment has {BONN_SAMPLES} samples at {BONN_SFREQ} Hz, found "
            f"{samples.size} (other single-column text formats are not recognised)"
        )
    letter = path.stem[:1].upper()
    kind = BONN_TYPES.get(letter, "eeg")
    return Recording(
        data=samples[None, :] * 1e-6,
        sfreq=BONN_SFREQ,
        channels=ChannelSet(["ch1"], [kind]),
        provenance={"path": str(path), "format": "bonn", "units": "uV -> V", "set": letter},
    )


def _malow_channel_names(folder: Path, n: int) -> list[str]:
    table = folder / "ChannelsSeizureData.csv"
    if not table.exists():
        log.warning("%s: no ChannelsSeizureData.csv, channels numbered ch01..", folder)
        return [f"ch{i:02d}" for i in range(1, n + 1)]
    with table.open() as fh:
        names = [row["names_channels"].strip() for row in csv.DictReader(fh)]
    if len(names) != n:
        raise DataError(f"{table}: {len(names)} channel names for {n} .inp files")
    return names


def _load_malow(folder: Path) -> Recording:
    files = sorted(folder.glob("ch*.inp"), key=lambda p: int(re.sub(r"\D", "", p.stem) or 0))
    if not files:
        raise DataError(f"{folder}: no chNN.inp files")
    columns = [_read_numeric_column(f) for f in files]
    lengths = {c.size for c in columns}
    if len(lengths) != 1:
        short = min(zip((c.size for c in columns), files))
        raise DataError(
            f"{folder}: channel files differ in length ({sorted(lengths)} samples); "
            f"shortest is {short[1].name}"
        )
    names = _malow_channel_names(folder, len(files))
    # Positions come from the standard 10-05 montage after alias normalisation (T3->T7...):
    # the CSV's Cz row is all zeros and SP1/SP2 (sphenoidal) have none.
    return Recording(
        data=np.vstack(columns) * 1e-6,
        sfreq=MALOW_SFREQ,
        channels=ChannelSet(names),
        provenance={"path": str(folder), "format": "malow-inp", "units": "uV -> V"},
    )


def edf_size_problem(path: Path) -> str | None:
    """How an EDF/BDF file's size disagrees with its header, or None when it agrees.

    The header states the number of data records and the samples per record of every
    signal (2 bytes per sample in EDF, 3 in BDF); the data after the header must be
    exactly that many records. MNE only warns on a mismatch and reads what is there, so
    a truncated file would pass for a complete, shorter one. A header it cannot parse is
    left to MNE's own error.
    """
    with path.open("rb") as fh:
        head = fh.read(256)
        try:
            header_bytes, n_records, n_signals = int(head[184:192]), int(head[236:244]), int(head[252:256])
            fh.seek(256 + 216 * n_signals)
            samples = [int(fh.read(8)) for _ in range(n_signals)]
        except ValueError:
            return None
    record_bytes = sum(samples) * (3 if head[:1] == b"\xff" else 2)
    data_bytes = path.stat().st_size - header_bytes
    if record_bytes <= 0 or n_signals <= 0:
        return None
    if n_records == -1:  # "not known yet": a recorder stopped before it closed the file
        if data_bytes % record_bytes:
            return f"the header leaves the number of records open and the data ({data_bytes} bytes) are not whole records of {record_bytes} bytes"
        log.warning("%s: the header does not state the number of records; read %d from the file size", path, data_bytes // record_bytes)
        return None
    if data_bytes != n_records * record_bytes:
        what = "truncated" if data_bytes < n_records * record_bytes else "longer than its header says"
        return (
            f"file {what}: the header states {n_records} records of {record_bytes} bytes "
            f"({n_records * record_bytes} bytes of data), found {data_bytes} bytes ({data_bytes / record_bytes:.2f} records)"
        )
    return None


def _header_types(path: Path) -> dict:
    """EDF/BDF: channel types from the labels' type prefixes (``'ECOG G1'``, ``'SEEG LA1'``)."""
    return {"infer_types": True} if path.suffix.lower() in (".edf", ".bdf") else {}


def bids_channels_tsv(path: Path) -> Path | None:
    """The BIDS ``channels.tsv`` beside a recording named like ``sub-01_..._ieeg.edf``, or None."""
    if not path.name.startswith("sub-") or "_" not in path.name:
        return None
    sidecar = path.with_name(path.name[: path.name.rindex("_")] + "_channels.tsv")
    return sidecar if sidecar.is_file() else None


def _read_raw(path: Path):
    """MNE's reader; through mne-bids (channel types, bad channels, electrode positions
    from the sidecars) when a BIDS ``channels.tsv`` is beside the file."""

    if bids_channels_tsv(path) is None:
        return mne.io.read_raw(path, preload=True, verbose="warning", **_header_types(path))

    return read_raw_bids(get_bids_path_from_fname(path), extra_params={"preload": True}, verbose="warning")


def _without_bads(raw, path: Path):
    """``raw`` without the channels its header or BIDS sidecar marks bad (logged)."""
    bads = list(raw.info["bads"])
    if bads:
        log.warning("%s: %d channel(s) marked bad excluded: %s", path.name, len(bads), _listing(bads))
        raw.drop_channels(bads)
    return raw


def _load_mne(path: Path) -> Recording:
    if path.suffix.lower() in (".edf", ".bdf"):
        problem = edf_size_problem(path)
        if problem:
            raise DataError(f"{path}: {problem}")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            raw = _read_raw(path)
            failure = None
        except Exception as exc:  # MNE raises many types for a corrupt header
            failure = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    corrupt = [str(w.message) for w in caught if str(w.message).startswith(MNE_CORRUPTION)]
    if corrupt:  # MNE's report of a truncated FIF: it reads on (or fails) with a lesser message
        raise DataError(f"{path}: truncated or corrupt file ({re.sub(r' in file .*', '', corrupt[0])})")
    if failure:
        raise DataError(f"{path}: cannot read as {path.suffix.upper()[1:]} ({failure})")
    reader = "mne-bids" if bids_channels_tsv(path) else "mne"
    return Recording.from_raw(_without_bads(raw, path), {"path": str(path), "format": path.suffix.lower()[1:], "reader": reader})


def load_recording(path: str | Path) -> Recording:
    """Load any supported recording; see the module docstring for the families."""
    path = Path(path)
    if not path.exists():
        raise DataError(f"{path}: no such file or folder")
    if path.is_dir():
        if any(path.glob("ch*.inp")):
            return _load_malow(path)
        raise DataError(f"{path}: a folder is only read as a Malow recording (chNN.inp files)")
    suffix = path.suffix.lower()
    if path.name.endswith(".fif.gz") or suffix in MNE_EXTENSIONS:
        return _load_mne(path)
    if suffix == ".inp":
        return _load_malow(path.parent)
    if suffix == ".txt":
        return _load_bonn(path)
    raise DataError(
        f"{path}: unsupported file type {suffix!r}; expected one of "
        f"{', '.join(sorted(MNE_EXTENSIONS | {'.txt (Bonn)', '.inp (Malow)'}))}"
    )


def usable_signals(recording: Recording, channels=None, *, sfreq: float | None = None) -> Recording:
    """The recording a decoder may read, or one :class:`DataError` saying why there is none.

    ``channels``: the names the consumer reads (default: every channel but stim ones);
    ``sfreq``: the rate it needs (None: any). Refused: another sampling rate, NaN/inf
    samples in a read channel, every read channel flat. Flat channels among several are
    dropped, with a logged warning, so that a channel mapping states how it replaces
    them (interpolated or missing); clipped channels are kept with a warning.
    """
    where = Path(recording.provenance.get("path", "recording")).name
    if sfreq is not None and abs(recording.sfreq - sfreq) > 1e-6 * sfreq:
        raise DataError(f"{where}: expected a sampling rate of {sfreq:g} Hz, found {recording.sfreq:g} Hz")
    kinds = dict(zip(recording.channels.names, recording.channels.types))
    read = [n for n in recording.channels.names if kinds[n] not in ("stim", "syst") and (channels is None or n in channels)]
    flags = recording.channel_flags()
    nan = [f"{n} ({flags[n][0]})" for n in read if flags.get(n, [""])[0].startswith("nan")]
    if nan:
        raise DataError(f"{where}: expected finite samples, found NaN/inf in {len(nan)} channel(s): {_listing(nan)}")
    flat = [n for n in read if "flat" in flags.get(n, [])]
    if read and len(flat) == len(read):
        raise DataError(f"{where}: no signal: all {len(read)} channels read are flat (peak-to-peak below 0.1 uV)")
    clipped = [n for n in read if "clipped" in flags.get(n, [])]
    if clipped:
        log.warning("%s: %d clipped channel(s) kept: %s", where, len(clipped), _listing(clipped))
    if not flat:
        return recording
    log.warning("%s: %d flat channel(s) dropped: %s", where, len(flat), _listing(flat))
    keep = [i for i, n in enumerate(recording.channels.names) if n not in flat]
    names = [recording.channels.original_names[i] for i in keep]
    return Recording(
        data=recording.data[keep], sfreq=recording.sfreq,
        channels=ChannelSet(names, [recording.channels.types[i] for i in keep], recording.channels.positions),
        annotations=recording.annotations, provenance=recording.provenance,
    )  # fmt: skip


def _listing(names: list[str], limit: int = 10) -> str:
    return ", ".join(names[:limit]) + (f" ... ({len(names) - limit} more)" if len(names) > limit else "")


def describe(recording: Recording) -> str:
    """The text ``bci info`` prints: format, rate, duration, channels with flags, events."""
    rec = recording
    flags = rec.channel_flags()
    lines = [
        f"file: {Path(rec.provenance.get('path', '?')).name}",
        f"format: {rec.provenance.get('format', '?')}",
        f"channels: {len(rec.channels)}",
        f"sampling rate: {rec.sfreq:g} Hz",
        f"duration: {rec.duration:.2f} s ({rec.n_times} samples)",
        "",
        f"{'#':>4}  {'name':<10} {'original':<14} {'type':<6} flags",
    ]
    for i, (name, orig, kind) in enumerate(zip(rec.channels.names, rec.channels.original_names, rec.channels.types), 1):
        mark = ", ".join(flags.get(name, [])) or "ok"
        lines.append(f"{i:>4}  {name:<10} {orig if orig != name else '':<14} {kind:<6} {mark}")
    ann = rec.annotations
    lines.append("")
    if len(ann) == 0:
        lines.append("annotations: none")
    else:
        descriptions, counts = np.unique(ann.description, return_counts=True)
        summary = ", ".join(f"{d} x{c}" for d, c in zip(descriptions, counts))
        lines.append(f"annotations: {len(ann)} ({summary})")
        for onset, dur, desc in list(zip(ann.onset, ann.duration, ann.description))[:5]:
            lines.append(f"  {onset:9.3f} s  {dur:7.3f} s  {desc}")
        if len(ann) > 5:
            lines.append(f"  ... {len(ann) - 5} more")
    if flags:
        lines.append(f"flagged channels: {len(flags)} of {len(rec.channels)}")
    return "\n".join(lines)
