"""PACS sources and destinations in batch configs (``salm-protect batch``); see docs/pacs.md.

A job's input may be a ``dicomweb:`` or ``dimse:`` source; in a ``[[jobs]]`` table ``study``,
``series`` and ``accession`` select what to pull, and ``send`` (in ``[settings]`` or per job) names
destinations for the finished job folder::

    output = "protected"
    inputs = ["dicomweb:http://pacs:8042/dicom-web/studies/1.2.840..."]   # one job per source
    [settings]
    send = ["dimse:ORTHANC@pacs:4242"]
    [[jobs]]
    name = "study-b"
    inputs = ["dimse:ORTHANC@pacs:4242"]
    accession = "03086212"

A job's sources are retrieved when the job runs (not before the batch starts) into a private
temporary folder removed when the job ends, also after a failure or cancel; a job already finished
in an earlier run is not retrieved again. The job's fingerprint is made of the source text and the
selection, never of the temporary folder, so a rerun after a kill reuses the finished units. The send
uses the send journal (send.py), so a rerun sends only what the PACS has not confirmed yet: each
instance exactly once.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any, Callable

from salm_desktop.core.model import short_hash
from salm_desktop.core.pacs.endpoints import PacsError, is_pacs_spec, parse_endpoint
from salm_desktop.core.progress import Progress

SOURCES_OPTION, SEND_OPTION = "pacs_sources", "send"
PACS_OPTIONS = {SOURCES_OPTION, SEND_OPTION}  # job options, not engine settings
SELECTION_KEYS = ("study", "series", "accession")  # keys of a [[jobs]] table that select what to pull


def _config_error(message: str) -> Exception:
    from salm_desktop.core.batch import ConfigError

    return ConfigError(message)


def _source(config: Path, spec: str, selection: dict[str, Any], where: str) -> dict[str, Any]:
    try:
        endpoint = parse_endpoint(spec)
    except PacsError as exc:
        raise _config_error(f"{config}: {where}: {exc}") from None
    series = selection.get("series") or []
    series = [series] if isinstance(series, str) else series
    study, accession = selection.get("study"), selection.get("accession")
    if not all(isinstance(v, str) for v in series) or not all(v is None or isinstance(v, str) for v in (study, accession)):
        raise _config_error(f"{config}: {where}: study, accession and series must be UID / number strings")
    if endpoint.kind == "dimse" and not (study or accession):
        raise _config_error(f"{config}: {where}: a dimse: source needs study = \"UID\" or accession = \"N\" "
                            "(in a [[jobs]] table)")
    if endpoint.kind == "dicomweb" and not (study or accession or endpoint.study):
        raise _config_error(f"{config}: {where}: give …/studies/UID in the URL, or study/accession in a [[jobs]] table")
    return {"spec": spec.strip(), "study": study, "series": list(series), "accession": accession}


def top_level_source(config: Path, spec: str) -> tuple[str, list[Path], dict[str, Any]]:
    """A PACS entry of the top-level ``inputs``: one job, named by a hash (never by a UID, which
    would put the original study's identity into the release's folder name)."""
    source = _source(config, spec, {}, f"input {spec}")
    return "pacs-" + short_hash(json.dumps(source, sort_keys=True)), [], {SOURCES_OPTION: [source]}


def split_job_inputs(config: Path, table: dict[str, Any], entries: list, number: int) -> tuple[list, dict[str, Any]]:
    """A ``[[jobs]]`` table's inputs without its PACS sources, and the job options holding those."""
    pacs = [e for e in entries if isinstance(e, str) and is_pacs_spec(e)]
    selection = {k: table[k] for k in SELECTION_KEYS if k in table}
    if selection and not pacs:
        raise _config_error(f"{config}: [[jobs]] entry {number}: {', '.join(selection)} need a dicomweb: or dimse: input")
    local = [e for e in entries if not (isinstance(e, str) and is_pacs_spec(e))]
    sources = [_source(config, spec, selection, f"[[jobs]] entry {number}") for spec in pacs]
    return local, ({SOURCES_OPTION: sources} if sources else {})


def check_options(config: Path, job: str, options: dict[str, Any]) -> None:
    """``send`` must name PACS destinations (refused at load time, before any work)."""
    send = options.get(SEND_OPTION)
    if send is None:
        return
    send = [send] if isinstance(send, str) else send
    if not isinstance(send, list) or not all(isinstance(s, str) for s in send):
        raise _config_error(f"{config}: job {job!r}: send must be a list of dicomweb:/dimse: destinations")
    for spec in send:
        try:
            parse_endpoint(spec)
        except PacsError as exc:
            raise _config_error(f"{config}: job {job!r}: send: {exc}") from None
    options[SEND_OPTION] = list(send)


def job_name_default(folders: list[Path], options: dict[str, Any]) -> str:
    if folders:
        return folders[0].name
    return "pacs-" + short_hash(json.dumps(options.get(SOURCES_OPTION), sort_keys=True))


def _job_with_inputs(job, inputs: list[Path]):  # noqa: ANN001, ANN202
    """The same job reading ``inputs`` (local + retrieved folders) but keeping the fingerprint made of
    the sources' text and selection: the temporary folder's name changes on every run."""
    from salm_desktop.core.batch import BatchJob

    stable = dataclasses.replace(job, options={k: v for k, v in job.options.items() if k != SEND_OPTION}).fingerprint()

    @dataclasses.dataclass
    class PulledJob(BatchJob):
        stable_fingerprint: str = ""

        def fingerprint(self) -> str:
            return self.stable_fingerprint

    fields = {f.name: getattr(job, f.name) for f in dataclasses.fields(BatchJob)}
    fields["inputs"] = list(inputs)
    return PulledJob(**fields, stable_fingerprint=stable)


def run_job(job, output: Path, progress: Progress, run: Callable):  # noqa: ANN001, ANN201
    """``run(job)`` (batch._run_job) with the job's PACS sources pulled first and its release sent after."""
    from salm_desktop.core.batch import JobOutcome
    from salm_desktop.core.pacs.retrieve import Selection, private_retrieval

    sources = job.options.get(SOURCES_OPTION) or []
    if not sources and not job.options.get(SEND_OPTION):
        return run(job)
    original_uids: set[str] = set()
    if sources and not (output / job.name).exists():  # a job finished earlier is not pulled again
        pulls = [(parse_endpoint(s["spec"]), Selection(study=s["study"], series=list(s["series"]), accession=s["accession"]))
                 for s in sources]
        try:
            with private_retrieval(pulls, progress=progress) as (folders, results):
                for (endpoint, _), result in zip(pulls, results):
                    original_uids |= result.sop_uids
                    progress.log(f"job {job.name}: retrieved {result.instances} instances ({result.bytes / 1e6:.1f} MB) "
                                 f"from {endpoint.display}")
                outcome = run(_job_with_inputs(job, [*job.inputs, *folders]))
        except PacsError as exc:
            return JobOutcome(job.name, "failed", None, str(exc))
    else:
        outcome = run(_job_with_inputs(job, job.inputs))
    return send_outcome(job, outcome, original_uids, progress)


def send_outcome(job, outcome, original_uids: set[str], progress: Progress):  # noqa: ANN001, ANN201
    """Send a finished job folder to the job's destinations; failures become skipped entries (so the
    batch is not complete and exits 3), the counts go to the outcome's summary and message."""
    from salm_desktop.core.pacs.send import send_release

    destinations = job.options.get(SEND_OPTION) or []
    if not destinations or outcome.status not in ("done", "already done") or outcome.out_dir is None:
        return outcome
    release = Path(outcome.out_dir)
    try:  # the originals' UIDs as the job recorded them (absent when de-identified): never send one back
        original_uids = original_uids | set(json.loads((release / "manifest.json").read_text(encoding="utf-8"))
                                            .get("uid_map", {}))
    except (OSError, ValueError, AttributeError):
        pass
    lines, reports = [], []
    for spec in destinations:
        endpoint = parse_endpoint(spec)
        try:
            report = send_release(release, endpoint, original_uids=original_uids, progress=progress)
        except PacsError as exc:
            outcome.skipped.append({"path": release.name, "reason": f"not sent to {endpoint.display}: {exc}"})
            lines.append(f"{endpoint.display}: not sent")
            continue
        data = report.as_dict()
        reports.append(data)
        report.journal.with_name(report.journal.name.replace(".jsonl", "-report.json")).write_text(
            json.dumps(data, indent=2), encoding="utf-8")
        for item in report.instances:
            if item.status in ("failed", "refused"):
                outcome.skipped.append({"path": item.path, "reason": f"not sent to {endpoint.display}: {item.message}"})
        lines.append(f"{endpoint.display}: {data['sent']} sent, {data['already_sent']} already sent, "
                     f"{data['failed']} failed, {data['refused']} refused")
    outcome.summary = {**outcome.summary, "send": reports}
    outcome.message = "; ".join(filter(None, [outcome.message, *lines]))
    return outcome
