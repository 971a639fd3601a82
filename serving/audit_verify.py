"""``crm audit verify``: the audit trail checked against its key and its seals (decision 0015).

It names every record edited or forged (its MAC), removed (its number jumps), inserted (a number
seen before, or a chain that does not follow) or cut off a file's end (fewer than its seal says),
every file missing (sealed, not on disk) or planted (on disk, never sealed), and seals removed from
the ledger (its chain, or the copy of the seals shipped off the host).
"""

from __future__ import annotations

import hmac
from collections.abc import Iterable
from pathlib import Path

import orjson

from serving.audit import GENESIS, LEDGER, SEAL_EVENT, AuditKeys


def seals_from_log(lines: Iterable[str]) -> list[dict]:
    """The seals in lines of a log (the deployment's log sink: any line holding a seal's JSON)."""
    seals = []
    for line in lines:
        if SEAL_EVENT in line and "{" in line:
            try:
                seal = orjson.loads(line[line.index("{") :])
            except orjson.JSONDecodeError:
                continue
            if seal.get("event") == SEAL_EVENT:
                seal.pop("event")
                seals.append(seal)
    return seals


def _mac_ok(keys: AuditKeys, record: dict, name: str) -> bool:
    kid = record.get("kid", "")
    if kid not in keys.by_id:
        return False
    body = orjson.dumps({k: v for k, v in record.items() if k != name})
    return hmac.compare_digest(keys.mac(kid, body), str(record.get(name, "")))


def _verify_ledger(directory: Path, keys: AuditKeys, problems: list[str]) -> tuple[dict[str, dict], set[str]]:
    """The ledger's chain; returns the last seal of each file and the MAC of every seal."""
    last: dict[str, dict] = {}
    macs: set[str] = set()
    path = directory / LEDGER
    if not path.exists():
        return last, macs
    prev = GENESIS
    with open(path, "rb") as fh:
        for number, line in enumerate(fh, start=1):
            try:
                seal = orjson.loads(line)
            except orjson.JSONDecodeError:
                problems.append(f"{LEDGER} line {number}: not a seal")
                continue
            if not _mac_ok(keys, seal, "mac"):
                problems.append(f"{LEDGER} line {number}: its content does not match its MAC "
                                "(edited, or recomputed without the key)")  # fmt: skip
            elif seal.get("prev") != prev:
                problems.append(f"{LEDGER} line {number}: does not follow the seal before it (seals were removed "
                                "or inserted)")  # fmt: skip
            prev = seal.get("mac", "")
            macs.add(prev)
            last[seal.get("file", "?")] = seal
    return last, macs


def _verify_file(path: Path, keys: AuditKeys, seal_macs: set[str], problems: list[str]) -> tuple[int, dict[int, str]]:
    """The file's chain; returns its number of lines and the MAC of each record by its number."""
    name, lines, expected, prev = path.name, 0, 1, None
    by_seq: dict[int, str] = {}
    with open(path, "rb") as fh:
        for number, line in enumerate(fh, start=1):
            lines += 1
            try:
                record = orjson.loads(line)
                seq = int(record["seq"])
            except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
                problems.append(f"{name} line {number}: not an audit record")
                expected += 1
                continue
            mac = record.get("mac")
            if not _mac_ok(keys, record, "mac"):
                problems.append(f"{name} line {number}: its content does not match its MAC (edited, or written or "
                                "recomputed without the key)")  # fmt: skip
                expected, prev = expected + 1, mac
                continue
            if seq > expected:
                gone = f"record {expected}" if seq == expected + 1 else f"records {expected} to {seq - 1}"
                problems.append(f"{name} line {number}: {gone} before it removed")
            elif seq < expected:
                problems.append(f"{name} line {number}: inserted (a copy of record {seq})")
                continue  # the chain goes on from the record before it
            elif prev is None and record.get("prev") not in seal_macs | {GENESIS}:
                problems.append(f"{name} line 1: follows a seal that is not in {LEDGER} (seals were removed)")
            elif prev is not None and record.get("prev") != prev:
                problems.append(f"{name} line {number}: does not follow the record before it (inserted or moved)")
            by_seq.setdefault(seq, mac)
            prev, expected = mac, max(expected, seq + 1)
    return lines, by_seq


def verify(directory: Path, keys: AuditKeys, off_host: list[dict] | None = None) -> tuple[int, list[str], list[str]]:
    """(records checked, problems, notes) of the trail in ``directory``: each record's MAC, each
    file's chain, each file against its last seal (count and last MAC), the ledger's chain, and,
    given ``off_host`` seals (the log sink's copy), the ledger against them. A note is not a
    problem: records written after a file's last seal (its process is running, or was killed)."""
    problems: list[str] = []
    notes: list[str] = []
    last_seal, seal_macs = _verify_ledger(directory, keys, problems)
    for seal in off_host or []:  # the copy the API cannot rewrite: every seal must still be on the ledger
        if seal.get("mac") not in seal_macs:
            problems.append(f"the seal of {seal.get('file')} at {seal.get('at')} ({seal.get('records')} records) is "
                            f"missing from {LEDGER}: seals were removed")  # fmt: skip
            if _mac_ok(keys, seal, "mac"):
                known = last_seal.get(seal.get("file"))
                if known is None or seal.get("records", 0) > known.get("records", 0):
                    last_seal[seal["file"]] = seal
    count = 0
    on_disk = {path.name: path for path in sorted(directory.glob("api-*.jsonl"))}
    for name, path in on_disk.items():
        lines, by_seq = _verify_file(path, keys, seal_macs, problems)
        count += lines
        seal = last_seal.get(name)
        if seal is None:
            problems.append(f"{name}: not in {LEDGER} (its seals were removed, or the file was planted)")
            continue
        sealed, last = seal.get("records", 0), max(by_seq, default=0)
        if last < sealed:
            problems.append(f"{name}: its last record is number {last}, but its seal of {seal.get('at')} says "
                            f"{sealed}: the last {sealed - last} were cut off")  # fmt: skip
        elif sealed and by_seq.get(sealed) != seal.get("last"):
            problems.append(f"{name}: record {sealed} is not the one its seal of {seal.get('at')} names "
                            "(records were removed or replaced)")  # fmt: skip
        elif last > sealed:
            if seal.get("final"):
                problems.append(f"{name}: {last - sealed} records after its final seal (appended later)")
            else:
                notes.append(f"{name}: {last - sealed} records after its last seal (its process is running, or "
                             "stopped without sealing)")  # fmt: skip
    for name, seal in last_seal.items():
        if name not in on_disk:
            problems.append(f"{name} is missing: its seal of {seal.get('at')} says {seal.get('records')} records")
    return count, problems, notes
