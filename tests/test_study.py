"""scripts/research/study.py: selection on validation only, paired statistics, resuming, and the report (a fake task
whose "training" is a tiny script, so that the flow runs in seconds)."""

import json
import math
import shutil
import textwrap
from pathlib import Path

import pytest

from scripts.research import study


FAKE_TRAINING = textwrap.dedent(
    """
    import json, sys
    from pathlib import Path
    out, variant, seed, alpha, beta, test = Path(sys.argv[1]), sys.argv[2], int(sys.argv[3]), *sys.argv[4:7]
    if variant == "broken":
        sys.exit(3)
    with open(out.parents[5] / "calls.txt", "a") as calls:
        calls.write(f"{variant} {seed} {alpha} {beta} {test}\\n")
    ea = alpha != "None"
    # validation peaks at alpha 0.5, beta 0.1; on test EA is 0.1 + seed / 100 above the twin
    validation = 0.8 - (float(alpha) - 0.5) ** 2 - (float(beta) - 0.1) ** 2 if ea else 0.7
    scores = {"validation": validation}
    if test == "True":
        scores["test"] = 0.6 + seed / 100 + (0.1 + seed / 100 if ea else 0.0)
        scores["test_error"] = 1 - scores["test"]
    (out / "scores.json").write_text(json.dumps(scores))
    """
)


def fake_task(tmp_path: Path, variants: dict[str, bool], seeds: int = 3) -> study.Task:
    script = tmp_path / "fake_training.py"
    script.write_text(FAKE_TRAINING)

    def commands(run, out, work, data_dir):
        return [[str(script), str(out), run.variant, str(run.seed), str(run.alpha), str(run.beta), str(run.test)]]

    def score(run, out, data_dir):
        return json.loads((out / "scores.json").read_text())

    return study.Task("fake", "Fake: a task", "accuracy", variants, "vanilla", seeds, commands, score, {"epochs": 1})


def test_study_chooses_on_validation_compares_on_test_and_resumes(tmp_path, monkeypatch):
    task = fake_task(tmp_path, {"vanilla": False, "EA": True})
    monkeypatch.setattr(study, "TASKS", {"fake": task})
    output, results_dir = tmp_path / "runs", tmp_path / "report"
    argv = ["--output_dir", str(output), "--results_dir", str(results_dir), "--jobs", "2", "--threads", "1"]
    results = study.main(argv)["tasks"]["fake"]

    calls = (output / "calls.txt").read_text().splitlines()
    selection = [call for call in calls if call.endswith("False")]
    assert len(selection) == len(study.DEFAULT_GRID)  # EA only, each grid point once, never scored on test
    assert all(call.split()[:2] == ["EA", str(study.SELECTION_SEED)] for call in selection)
    assert results["chosen"] == {"EA": {"alpha": 0.5, "beta": 0.1}}
    comparison = sorted(call for call in calls if call.endswith("True"))
    assert comparison == sorted(
        [f"EA {seed} 0.5 0.1 True" for seed in range(3)] + [f"vanilla {seed} None None True" for seed in range(3)]
    )

    assert results["variants"]["vanilla"]["test"] == pytest.approx([0.6, 0.61, 0.62])
    assert results["variants"]["EA"]["mean"] == pytest.approx(0.72)
    comparison = results["comparisons"]["EA"]
    assert comparison["differences"] == pytest.approx([0.1, 0.11, 0.12])
    assert comparison["std"] == pytest.approx(0.01)
    assert (comparison["wins"], comparison["ties"], comparison["losses"]) == (3, 0, 0)
    error = comparison["other_metrics"]["error"]  # another test metric, compared seed by seed too
    assert error["differences"] == pytest.approx([-0.1, -0.11, -0.12]) and error["losses"] == 3
    assert set(results["cpu_seconds"]) == {"selection", "comparison"}
    record = json.loads(next(results_dir.glob("runs/fake/comparison/EA/*/seed_0.json")).read_text())
    assert record["scores"]["test"] == pytest.approx(0.7) and record["cpu_seconds"] >= 0 and record["threads"] == 1

    table = (results_dir / "results.md").read_text()
    assert "| Fake: a task | accuracy | 0.6100 +- 0.0100 | 0.7200 +- 0.0200 | +0.1100 +- 0.0100 | 3/0/0 |" in table
    assert "- vanilla, test error: 0.3900 +- 0.0100; by seed 0: 0.4000, 1: 0.3900, 2: 0.3800" in table
    assert "- EA - vanilla, test error (paired): -0.1100 +- 0.0100, wins/ties/losses 0/0/3" in table
    assert (results_dir / "results.png").stat().st_size > 0
    assert json.loads((results_dir / "results.json").read_text())["tasks"]["fake"]["chosen"]["EA"]["alpha"] == 0.5

    study.main(argv)  # finished runs are not repeated
    assert (output / "calls.txt").read_text().splitlines() == calls
    assert study.main([*argv, "--report"])["tasks"]["fake"]["comparisons"]["EA"]["mean"] == pytest.approx(0.11)


def test_the_twins_runs_are_queued_first_and_eas_comparison_runs_after_selection(tmp_path, monkeypatch):
    monkeypatch.setattr(study, "TASKS", {"fake": fake_task(tmp_path, {"vanilla": False, "EA": True})})
    study.main(["--output_dir", str(tmp_path / "runs"), "--results_dir", str(tmp_path / "report"), "--jobs", "1"])
    calls = [" ".join(call.split()[:2]) for call in (tmp_path / "runs" / "calls.txt").read_text().splitlines()]
    selection = [f"EA {study.SELECTION_SEED}"] * len(study.DEFAULT_GRID)
    assert calls == [f"vanilla {seed}" for seed in range(3)] + selection + [f"EA {seed}" for seed in range(3)]


def test_a_run_recorded_with_another_recipe_is_run_again(tmp_path, monkeypatch):
    task = fake_task(tmp_path, {"vanilla": False, "EA": True}, seeds=1)
    monkeypatch.setattr(study, "TASKS", {"fake": task})
    output, report = tmp_path / "runs", tmp_path / "report"
    argv = ["--output_dir", str(output), "--results_dir", str(report), "--jobs", "1"]
    study.main(argv)
    calls = (output / "calls.txt").read_text().splitlines()
    task.recipe = {"epochs": 2}
    (report / "results.json").unlink()  # the report of the earlier budget is never replaced
    assert study.main([*argv, "--report"])["tasks"] == {}  # runs of the earlier budget are not reported
    assert study.main(argv)["tasks"]["fake"]["recipe"] == {"epochs": 2}
    assert (output / "calls.txt").read_text().splitlines() == calls * 2  # every run again, once
    record = json.loads(next(report.glob("runs/fake/comparison/EA/*/seed_0.json")).read_text())
    assert record["recipe"] == {"epochs": 2}


def test_a_report_keeps_tasks_run_elsewhere_and_is_never_replaced_by_a_partial_one(tmp_path, monkeypatch):
    monkeypatch.setattr(study, "TASKS", {"fake": fake_task(tmp_path, {"vanilla": False, "EA": True}, seeds=1)})
    results_dir, runs = tmp_path / "report", tmp_path / "runs"
    study.main(["--output_dir", str(runs), "--results_dir", str(results_dir), "--jobs", "1"])
    before = {path.name: path.read_bytes() for path in results_dir.iterdir() if path.is_file()}
    # a fresh clone without the runs' output folders: the records make the same report
    again = study.main(["--output_dir", str(tmp_path / "none"), "--results_dir", str(results_dir), "--report"])
    assert json.dumps(again) == json.dumps(json.loads(before["results.json"]))
    assert (results_dir / "results.md").read_bytes() == before["results.md"]
    # recorded runs that lack a comparison the report has: nothing written
    seed_0 = next(results_dir.glob("runs/fake/comparison/EA/*/seed_0.json"))
    seed_0.unlink()
    with pytest.raises(SystemExit) as refusal:
        study.main(["--output_dir", str(runs), "--results_dir", str(results_dir), "--report"])
    assert (
        refusal.value.code != 0
        and "fake (EA)" in str(refusal.value)
        and "scripts.research.study fake" in str(refusal.value)
    )
    assert (results_dir / "results.md").read_bytes() == before["results.md"]
    # a task of the report with no records (run before records were kept): its section is kept as it is
    shutil.rmtree(results_dir / "runs")
    kept = study.main(["--output_dir", str(runs), "--results_dir", str(results_dir), "--report"])
    assert kept["tasks"]["fake"] == json.loads(before["results.json"])["tasks"]["fake"]
    assert (results_dir / "results.md").read_bytes() == before["results.md"]


def test_lower_is_better_chooses_and_wins_by_the_lower_score():
    result = study.paired([9.0, 12.0, 10.0], [10.0, 10.0, 10.0], higher_is_better=False)  # EA - twin: -1, +2, 0
    assert (result["wins"], result["ties"], result["losses"]) == (1, 1, 1)
    task = study.TASKS["lm_verses"]
    records = {
        run: {"scores": {"validation": 20.0 - i}} for i, run in enumerate(task.selection_runs())
    }  # the last setting of the grid has the lowest perplexity
    assert study.choose(task, records)[0]["EA"] == task.grid[-1]


@pytest.mark.parametrize("resumes", [False, True])
def test_an_interrupted_run_starts_over_unless_its_task_resumes_from_a_checkpoint(resumes, tmp_path):
    task = fake_task(tmp_path, {"vanilla": False, "EA": True}, seeds=1)
    task.resumes = resumes
    run = study.Run("fake", "vanilla", 0, True)
    out = run.folder(tmp_path / "runs") / "run"
    for name in ("checkpoint-3/trainer_state.json", "checkpoint-6/optimizer.pt"):  # 6: cut off while being saved
        (out / name).parent.mkdir(parents=True)
        (out / name).write_text("{}")
    study.execute(task, run, tmp_path / "runs", tmp_path / "records", tmp_path / "data", threads=1)
    assert (out / "checkpoint-3").is_dir() == resumes and (out / "scores.json").is_file()


def test_a_failed_run_is_reported_and_the_others_finish(tmp_path, monkeypatch):
    task = fake_task(tmp_path, {"vanilla": False, "broken": True, "EA": True}, seeds=1)
    monkeypatch.setattr(study, "TASKS", {"fake": task})
    argv = ["--output_dir", str(tmp_path / "runs"), "--results_dir", str(tmp_path / "report"), "--jobs", "1"]
    with pytest.raises(
        RuntimeError, match=r"(?s)4 run\(s\) failed.*fake_training\.py failed \(exit 3\); see .*broken.*log\.txt"
    ):
        study.main(argv)
    assert len(list((tmp_path / "report").glob("runs/fake/selection/EA/*/seed_100.json"))) == 4
    assert not list((tmp_path / "report").glob("runs/fake/selection/broken/*/seed_100.json"))


def test_paired_statistics():
    result = study.paired([0.7, 0.9, 1.0], [0.6, 0.7, 0.7])  # differences 0.1, 0.2, 0.3
    assert result["mean"] == pytest.approx(0.2) and result["std"] == pytest.approx(0.1)
    t = 0.2 / (0.1 / math.sqrt(3))
    assert result["p_value"] == pytest.approx(1 - t / math.sqrt(2 + t * t), rel=1e-6)  # Student t, 2 d.o.f.
    assert study.paired([0.5, 0.5], [0.5, 0.5]) | {"differences": None} == {
        "differences": None, "mean": 0.0, "std": 0.0, "wins": 0, "ties": 2, "losses": 0, "p_value": None,
    }  # fmt: skip


@pytest.mark.parametrize("name", list(study.TASKS))
def test_selection_runs_never_read_test_data(name, tmp_path):
    task = study.TASKS[name]
    ea_variant = next(variant for variant, ea in task.variants.items() if ea)
    selection = study.Run(name, ea_variant, study.SELECTION_SEED, False, *task.grid[0])
    comparison = study.Run(name, ea_variant, 0, True, *task.grid[0])
    out, work, data = tmp_path / "out", tmp_path / "work", tmp_path / "data"

    def flat(run):
        return [item for command in task.commands(run, out, work, data) for item in command]

    def reads_test_files(arguments):
        return any("test" in item[len(str(data)) :] for item in arguments if item.startswith(str(data)))

    arguments = flat(selection)
    assert not {"--do_predict", "--test", "--test_file"} & set(arguments)
    assert not reads_test_files(arguments)
    assert arguments[arguments.index("--ea_alpha") + 1] == str(task.grid[0][0])
    if "--score_test" in arguments:
        assert arguments[arguments.index("--score_test") + 1] == "false"
    tested = flat(comparison)
    assert (
        {"--do_predict", "--test"} & set(tested)
        or reads_test_files(tested)
        or (tested[tested.index("--score_test") + 1] == "true")
    )


@pytest.mark.parametrize(
    "perplexities, plateau, last_fifth",
    [
        ([40, 30, 28, 27, 27.5, 28.5], 0.0, 28.5 / 27.5 - 1),  # overfits: the best (kept) model came before 80 %
        ([40, 30, 28, 27, 26, 25.5], 1 - 25.5 / 26, 25.5 / 26 - 1),  # still falling
    ],
)
def test_the_last_fifth_of_training_is_measured_on_the_kept_model_and_on_the_last_evaluation(
    perplexities, plateau, last_fifth, tmp_path
):
    steps = [100 * (i + 1) for i in range(len(perplexities))]  # 80 % of 600 steps: the evaluation at step 500
    history = [{"step": step, "loss": 9.0} for step in steps]
    history += [{"step": step, "eval_loss": math.log(ppl)} for step, ppl in zip(steps, perplexities)]
    (tmp_path / "trainer_state.json").write_text(json.dumps({"global_step": 600, "log_history": history}))
    assert study.last_fifth(tmp_path) == pytest.approx({"plateau": plateau, "last_fifth": last_fifth})


def test_the_lm_study_keeps_the_best_evaluations_model(tmp_path):
    run = study.Run("lm_verses", "vanilla", 0, True)
    [command] = study.llama_commands(run, tmp_path / "out", tmp_path / "work", tmp_path / "data")

    def value(flag):
        return command[command.index(flag) + 1]

    assert value("--load_best_model_at_end") == "True" and value("--save_steps") == value("--eval_steps")
