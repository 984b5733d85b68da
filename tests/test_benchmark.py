"""`benchmarks/benchmark.py --quick` end to end: results.json and results.md, ratios, targets, the shared-weights
check, the CPU peak-memory measurement, a subset of cases, and bad arguments."""

import json
import re
import statistics

import pytest
import torch

from benchmarks import benchmark


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory, one_thread):
    output_dir = tmp_path_factory.mktemp("benchmark")
    results = benchmark.main(["--quick", "--threads", "1", "--output_dir", str(output_dir)])
    return results, output_dir


def test_json_holds_every_case_and_variant(quick_run):
    results, output_dir = quick_run
    saved = json.loads((output_dir / "results.json").read_text())
    assert saved == json.loads(json.dumps(results))
    assert set(saved) == {"environment", "args", "checks", "cases", "targets"}
    assert {"date", "git_commit", "torch", "transformers", "cpu", "threads", "device"} <= set(saved["environment"])
    assert saved["environment"]["threads"] == 1 and saved["args"]["quick"] and saved["args"]["repeats"] == 2
    assert list(saved["cases"]) == list(benchmark.CASES)
    for name, case in saved["cases"].items():
        assert (case["batch_size"], case["length"]) == benchmark.QUICK_SHAPES[name]
        assert list(case["variants"]) == list(benchmark.VARIANTS)
        for result in case["variants"].values():
            assert len(result["seconds"]) == 2 and all(s > 0 for s in result["seconds"])
            assert result["median_s"] == pytest.approx(statistics.median(result["seconds"]))
            assert result["peak_bytes"] > result["step_bytes"] > 0


def test_ratios_are_medians_of_paired_times_and_quotients_of_peaks(quick_run):
    for case in quick_run[0]["cases"].values():
        variants = case["variants"]
        for reference in ("vanilla eager", "vanilla sdpa"):
            ratios = case["ratios"][f"EA / {reference}"]
            paired = [ea / other for ea, other in zip(variants["EA"]["seconds"], variants[reference]["seconds"])]
            assert ratios["time"] == pytest.approx(statistics.median(paired))
            assert ratios["peak_memory"] == pytest.approx(
                variants["EA"]["peak_bytes"] / variants[reference]["peak_bytes"]
            )


def test_targets_compare_the_ea_ratio_with_its_limit(quick_run):
    results = quick_run[0]
    assert [(t["case"], t["metric"], t["limit"]) for t in results["targets"]] == benchmark.TARGETS
    assert all(set(t) == {"case", "metric", "limit", "EA / vanilla eager", "EA / vanilla sdpa", "pass"}
               for t in results["targets"])  # fmt: skip
    assert all(t["pass"] is None for t in results["targets"])  # --quick: tiny models, targets not judged
    for target in benchmark.evaluate_targets(results["cases"]):
        ratios = results["cases"][target["case"]]["ratios"]
        assert target["EA / vanilla eager"] == ratios["EA / vanilla eager"][target["metric"]]
        assert target["EA / vanilla sdpa"] == ratios["EA / vanilla sdpa"][target["metric"]]
        assert target["pass"] == (target["EA / vanilla eager"] <= target["limit"])


def test_markdown_has_the_table_and_the_targets_last(quick_run):
    results, output_dir = quick_run
    lines = (output_dir / "results.md").read_text().splitlines()
    header = lines.index(benchmark.markdown_table(results["cases"])[0])
    rows = [line.split(" | ") for line in lines[header + 2 : header + 2 + 3 * len(benchmark.CASES)]]
    assert [(row[0].lstrip("| "), row[1]) for row in rows] == [
        (name, variant) for name in benchmark.CASES for variant in benchmark.VARIANTS
    ]
    eager = results["cases"][next(iter(benchmark.CASES))]["variants"]["vanilla eager"]
    assert rows[0][2] == f"{1000 * eager['median_s']:.2f}" and rows[0][3] == "1.000"
    target = re.compile(
        r"- \S+ (time|peak memory): \d+\.\d{3} <= \d\.\d\d (PASS|FAIL) \(EA / vanilla sdpa \d+\.\d{3}\)"
    )
    judged = benchmark.summary_lines(results["cases"], benchmark.evaluate_targets(results["cases"]))
    targets = [line for line in judged if target.fullmatch(line)]
    assert targets == judged[-len(benchmark.TARGETS) :]
    quick = [line for line in lines if "not judged (--quick)" in line]  # the quick run's targets
    assert quick == lines[-len(benchmark.TARGETS) :] and not any(
        word in line for line in lines for word in ("PASS", "FAIL")
    )


def test_variants_share_weights_and_attention_implementations(quick_run, one_thread):
    checks = quick_run[0]["checks"]
    assert set(checks) == {"bert", "vit", "marian", "llama"}
    for differences in checks.values():
        assert differences["EA off"] <= benchmark.CHECK_ATOL["EA off"]
        assert differences["vanilla sdpa"] <= benchmark.CHECK_ATOL["vanilla sdpa"]
    for family in ("bert", "marian", "llama"):
        models = benchmark.build_models(family, quick=True)
        assert {v: m.config._attn_implementation for v, m in models.items()} == {
            "vanilla eager": "eager",
            "vanilla sdpa": "sdpa",
            "EA": "eager",
        }
        for variant in ("EA", "vanilla sdpa"):
            changed = benchmark.build_models(family, quick=True)
            with torch.no_grad():
                for parameter in changed[variant].parameters():
                    parameter.mul_(1.01)
            with pytest.raises(RuntimeError, match="do not share their weights"):
                benchmark.check_shared_weights(changed, family)


def test_ea_twin_refuses_weights_beyond_the_ea_convs():
    models = benchmark.build_models("bert", quick=True)
    with pytest.raises(RuntimeError, match="differ beyond the EA convs"):
        benchmark.load_shared_weights(models["EA"], models["EA"].bert)


def test_cpu_peak_rise_counts_live_tensor_bytes():
    def step():
        first = torch.empty(1_000_000)  # 4 MB
        second = torch.empty(2_000_000)  # 8 MB, while the first is live
        del first, second
        third = torch.empty(500_000)  # 2 MB, after both are freed
        del third

    assert benchmark.peak_rise(step, torch.device("cpu")) == 12_000_000


def test_a_subset_of_cases(tmp_path, one_thread):
    argv = ["--quick", "--threads", "1", "--repeats", "1", "--warmup", "0", "--no-check", "--output_dir"]
    results = benchmark.main([*argv, str(tmp_path), "--cases", "marian-generate-64", "bert-train-b8-l128"])
    assert list(results["cases"]) == ["bert-train-b8-l128", "marian-generate-64"]  # CASES order
    assert results["checks"] == {}
    assert [t["case"] for t in results["targets"]] == ["bert-train-b8-l128", "bert-train-b8-l128"]
    assert all(len(v["seconds"]) == 1 for c in results["cases"].values() for v in c["variants"].values())


def test_reference_and_compiled_variants(tmp_path, one_thread):
    """`--reference` adds the EA model with its steps' reference forward, `--compile` torch.compile of vanilla eager
    and of EA: each timed with the others, its ratio reported and set beside the targets."""
    argv = ["--quick", "--threads", "1", "--repeats", "1", "--warmup", "1", "--no-check", "--reference", "--compile"]
    results = benchmark.main([*argv, "--cases", "bert-forward-b1-l128", "--output_dir", str(tmp_path)])
    case = results["cases"]["bert-forward-b1-l128"]
    assert list(case["variants"]) == [*benchmark.VARIANTS, benchmark.REFERENCE_VARIANT, *benchmark.COMPILED_VARIANTS]
    assert list(case["ratios"]) == list(benchmark.RATIOS)
    seconds = {variant: result["seconds"] for variant, result in case["variants"].items()}
    compiled = case["ratios"]["EA compiled / vanilla compiled"]["time"]
    assert compiled == pytest.approx(seconds["EA compiled"][0] / seconds["vanilla compiled"][0])
    (target,) = results["targets"]
    assert target["EA compiled / vanilla compiled"] == compiled
    assert "EA reference / vanilla eager" in (tmp_path / "results.md").read_text()


def test_processes_report_the_median_and_range_of_fresh_processes(tmp_path):
    """`--processes 2`: two fresh processes; each ratio is the median of theirs, with its range; targets on medians;
    the CPU's vector extensions are recorded."""
    argv = ["--quick", "--threads", "1", "--repeats", "1", "--warmup", "0", "--no-check", "--processes", "2"]
    results = benchmark.main([*argv, "--cases", "bert-forward-b8-l128", "--output_dir", str(tmp_path)])
    assert len(results["processes"]) == 2 and json.loads((tmp_path / "results.json").read_text()) == results
    assert isinstance(results["environment"]["cpu_vector_extensions"], list)
    for reference, ratios in results["cases"]["bert-forward-b8-l128"]["ratios"].items():
        for metric, spread in ratios.items():
            own = [run["cases"]["bert-forward-b8-l128"]["ratios"][reference][metric] for run in results["processes"]]
            assert spread["values"] == own and spread["median"] == statistics.median(own)
            assert spread["min"] <= spread["median"] <= spread["max"]
    medians = results["cases"]["bert-forward-b8-l128"]["ratios"]["EA / vanilla eager"]
    for target in results["targets"]:
        assert target["EA / vanilla eager"] == medians[target["metric"]]["median"]
    assert "over 2 fresh processes" in (tmp_path / "results.md").read_text()


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--repeats", "0"], "--repeats must be at least 1"),
        (["--warmup", "-1"], "--warmup must be at least 0"),
        (["--threads", "0"], "--threads must be at least 1"),
        (["--processes", "0"], "--processes must be at least 1"),
        (["--cases", "bert-forward"], "invalid choice"),
        (["--dtype", "int8"], "invalid choice"),
    ],
)
def test_bad_arguments(argv, message, capsys):
    with pytest.raises(SystemExit):
        benchmark.parse_args(["--quick", *argv])
    assert message in capsys.readouterr().err


@pytest.mark.skipif(torch.cuda.is_available(), reason="a CUDA device is available")
def test_cuda_without_a_device(capsys):
    with pytest.raises(SystemExit):
        benchmark.parse_args(["--device", "cuda"])
    assert "no CUDA device" in capsys.readouterr().err
