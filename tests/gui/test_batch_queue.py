"""The wizard's batch queue (no widgets): the core batch runner's jobs, outcomes and fingerprint."""

from __future__ import annotations

import pytest

from salm_desktop.core.progress import Cancelled, Progress
from salm_desktop.gui import model as m
from salm_desktop.gui.batch_queue import BatchQueue


def test_a_batch_from_the_wizard_and_the_same_batch_from_toml_share_one_fingerprint(tmp_path):
    from salm_desktop.core.batch import load_config

    study = tmp_path / "study"
    study.mkdir()
    settings = m.WizardSettings(method="salm", epsilon=4 / 255, mask_ratio=0.3, seed=3, label_source="clusters",
                                n_clusters=3, device="auto", mask_scope="sample", splits="train,val")
    q = BatchQueue()
    q.add(study)
    gui_job = q.build_config(tmp_path / "out", settings).jobs[0]
    config = tmp_path / "batch.toml"
    config.write_text('output = "out"\ninputs = ["study"]\n[settings]\nmethod = "salm"\nepsilon = "4/255"\n'
                      'mask_ratio = 0.3\nseed = 3\nlabels = "clusters:3"\nmask_scope = "sample"\n'
                      'splits = ["train", "val"]\n')
    cli_job = load_config(config).jobs[0]
    assert gui_job.fingerprint() == cli_job.fingerprint()
    config.write_text(config.read_text().replace("seed = 3", "seed = 4"))
    assert load_config(config).jobs[0].fingerprint() != gui_job.fingerprint()


def test_batch_queue_maps_core_batch_outcomes_and_cancel(tmp_path):
    from salm_desktop.core.batch import BatchResult, JobOutcome

    q = BatchQueue()
    for name in ("a", "b", "a b"):
        assert q.add(tmp_path / name)
    assert not q.add(tmp_path / "a")
    assert q.job_names() == ["a", "b", "a_b"]
    settings = m.WizardSettings(method="em", seed=3, label_source="clusters", n_clusters=3)
    config = q.build_config(tmp_path / "out", settings)
    assert [j.inputs for j in config.jobs] == [[tmp_path / "a"], [tmp_path / "b"], [tmp_path / "a b"]]
    assert config.jobs[0].settings.method == "em" and config.jobs[0].settings.n_clusters == 3
    assert config.jobs[0].loader_labels == "none" and config.output == tmp_path / "out"
    seen = []

    def fake_run_batch(cfg, progress, on_job, executor=None):
        outcomes = []
        for i, job in enumerate(cfg.jobs):
            on_job(i, job)
            seen.append(job.name)
            if job.name == "b":
                outcomes.append(JobOutcome(job.name, "failed", None, "nothing loadable in the inputs"))
            else:
                outcomes.append(JobOutcome(job.name, "done", cfg.output / job.name))
        return BatchResult(outcomes, cfg.output / "batch-summary.json")

    items = q.run(tmp_path / "out", settings, Progress(), run_batch=fake_run_batch)
    assert seen == ["a", "b", "a_b"]
    assert [i.status for i in items] == ["done", "failed", "done"]
    assert items[1].message == "nothing loadable in the inputs"
    assert items[2].out_dir == tmp_path / "out" / "a_b"

    def cancelling(cfg, progress, on_job, executor=None):
        on_job(0, cfg.jobs[0])
        raise Cancelled("batch cancelled")

    with pytest.raises(Cancelled):
        q.run(tmp_path / "out", settings, Progress(), run_batch=cancelling)
    assert [i.status for i in q.items] == ["cancelled", "cancelled", "cancelled"]
    assert q.items[1].message == "not started"


def test_a_queue_finished_in_the_wizard_is_already_done_for_the_same_cli_batch(tmp_path, dicom_dir):
    import shutil

    from salm_desktop.core.batch import load_config, run_batch

    study = tmp_path / "shoulder"
    shutil.copytree(dicom_dir / "hitachi_shoulder_mr" / "dicom", study)
    q = BatchQueue()
    q.add(study)
    settings = m.WizardSettings(method="random", seed=1, label_source="clusters", device="auto", report=False)
    assert [i.status for i in q.run(tmp_path / "out", settings, Progress())] == ["done"]
    config = tmp_path / "batch.toml"
    config.write_text('output = "out"\ninputs = ["shoulder"]\n[settings]\nmethod = "random"\nseed = 1\n'
                      'labels = "clusters"\nreport = false\n')
    outcome = run_batch(load_config(config)).jobs[0]
    assert outcome.status == "already done", outcome.message


def test_the_queue_runs_on_a_local_cluster_with_the_same_bytes_and_refuses_a_dead_scheduler(tmp_path, dicom_dir):
    import hashlib
    import shutil

    from salm_desktop.core.cluster import ClusterError

    study = tmp_path / "shoulder"
    shutil.copytree(dicom_dir / "hitachi_shoulder_mr" / "dicom", study)
    settings = m.WizardSettings(method="random", seed=1, label_source="clusters", device="cpu", report=False)

    def pixels(out):
        return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(out.rglob("*.dcm"))}

    plain, on_cluster = BatchQueue(), BatchQueue()
    plain.add(study)
    on_cluster.add(study)
    assert [i.status for i in plain.run(tmp_path / "plain", settings, Progress())] == ["done"]
    assert [i.status for i in on_cluster.run(tmp_path / "cluster", settings, Progress(), cluster="local:1")] == ["done"]
    assert pixels(tmp_path / "plain") == pixels(tmp_path / "cluster") != {}

    dead = BatchQueue()
    dead.add(study)
    with pytest.raises(ClusterError, match="127.0.0.1:9"):
        dead.run(tmp_path / "never", settings, Progress(), cluster="tcp://127.0.0.1:9")
    assert not (tmp_path / "never").exists()  # refused before any unit started
