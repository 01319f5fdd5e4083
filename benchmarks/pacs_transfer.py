"""Retrieve throughput from a loopback Orthanc over DICOMweb (WADO-RS) and DIMSE (C-GET, C-MOVE).

The real 3-slice CT (../shared/data/dicom/ct_3slice_dcmqi) is uploaded --copies times, each copy
with fresh Study/Series/SOP Instance UIDs (pixels untouched), into one Orthanc study of
3 x copies instances; salm_desktop.core.pacs.retrieve pulls it into a temporary folder, --repeats
times per protocol. MB/s = bytes written locally / wall seconds (median of the repeats).

    python benchmarks/pacs_transfer.py --copies 40 --repeats 3 [--compare-getscu]

Needs the Debian packages orthanc and orthanc-dicomweb.
"""

from __future__ import annotations

import argparse
import io
import json
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests" / "core" / "pacs"))
sys.path.insert(0, str(ROOT))

from orthanc_server import Orthanc  # noqa: E402

from salm_desktop.core.pacs import Credentials, Selection, retrieve  # noqa: E402
from orthanc_server import PASSWORD, USER  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--copies", type=int, default=40)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--compare-getscu", action="store_true",
                        help="also time dcmtk's getscu (C) pulling the same study over C-GET, as a reference")
    parser.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data" / "dicom" / "ct_3slice_dcmqi" / "dicom")
    args = parser.parse_args()

    import pydicom
    from pydicom.uid import generate_uid

    work = Path(tempfile.mkdtemp(prefix="salm-pacs-bench-"))
    server = Orthanc(work / "orthanc").start()
    try:
        study_uid = generate_uid()
        session = server.session()
        sources = sorted(args.data.glob("*.dcm"))
        for _ in range(args.copies):
            series_uid = generate_uid()
            for f in sources:
                ds = pydicom.dcmread(f)
                ds.StudyInstanceUID, ds.SeriesInstanceUID = study_uid, series_uid
                ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
                buf = io.BytesIO()
                ds.save_as(buf, enforce_file_format=True)
                session.post(f"{server.rest}/instances", data=buf.getvalue(), timeout=60).raise_for_status()
        creds = Credentials(user=USER, password=PASSWORD)
        from dataclasses import replace

        from orthanc_server import free_port

        move_port = free_port()  # C-MOVE: Orthanc sends to our storage SCP, registered as a modality
        server.register_modality("salm-bench", "SALMBENCH", move_port)
        protocols = (("dicomweb", f"dicomweb:{server.dicomweb}", creds), ("dimse", server.dimse, creds),
                     ("dimse_c_move", server.dimse, replace(creds, local_aet="SALMBENCH", move_port=move_port)))
        results = {}
        for name, spec, creds in protocols:
            rates, sizes, cpus = [], [], []
            for i in range(args.repeats):
                dest = work / f"{name}{i}"
                t0, c0 = time.perf_counter(), time.process_time()
                r = retrieve(spec, dest, Selection(study=study_uid), credentials=creds)
                seconds, cpu = time.perf_counter() - t0, time.process_time() - c0
                cpus.append(cpu)
                rates.append(r.bytes / 1e6 / seconds)
                sizes.append(r.bytes)
                shutil.rmtree(dest)
            results[name] = {"instances": r.instances, "MB": round(sizes[0] / 1e6, 1),
                             "MB_per_s_median": round(statistics.median(rates), 1),
                             "MB_per_s_all": [round(x, 1) for x in rates],
                             # our process's CPU seconds: what the client costs, whatever else loads the machine
                             "client_cpu_s_median": round(statistics.median(cpus), 2),
                             "MB_per_client_cpu_s": round(sizes[0] / 1e6 / statistics.median(cpus), 1)}
        if args.compare_getscu:
            import subprocess

            rates = []
            for i in range(args.repeats):
                dest = work / f"getscu{i}"
                dest.mkdir()
                t0 = time.perf_counter()
                subprocess.run(["getscu", "-aec", "ORTHANC", "-od", str(dest), "127.0.0.1", str(server.dicom_port),
                                "-k", "QueryRetrieveLevel=STUDY", "-k", f"StudyInstanceUID={study_uid}"],
                               check=True, capture_output=True)
                seconds = time.perf_counter() - t0
                rates.append(sum(p.stat().st_size for p in dest.iterdir()) / 1e6 / seconds)
                shutil.rmtree(dest)
            results["dcmtk_getscu"] = {"MB_per_s_median": round(statistics.median(rates), 1),
                                       "MB_per_s_all": [round(x, 1) for x in rates]}
        print(json.dumps({"copies": args.copies, "repeats": args.repeats, "results": results}, indent=2))
    finally:
        server.stop()
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
