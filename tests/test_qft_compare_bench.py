"""The fine-tuning comparison (``benchmarks/qft_compare.py``) on the real-weight models: the goal it
judges from the output SQNR before and after QFT, and the table it writes for them beside the
digits one."""

from __future__ import annotations

import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "benchmarks"))

import qft_compare  # noqa: E402


def test_real_model_goal_is_a_one_db_gain_in_output_sqnr() -> None:
    assert qft_compare.sqnr_goal(17.085, 18.925) == {"sqnr_gain_db": 1.84, "goal_holds": True}
    assert qft_compare.sqnr_goal(17.085, 17.502) == {"sqnr_gain_db": 0.417, "goal_holds": False}
    assert qft_compare.sqnr_goal(17.0, 16.0) == {"sqnr_gain_db": -1.0, "goal_holds": False}
    assert qft_compare.sqnr_goal(None, 18.0) == {"sqnr_gain_db": None, "goal_holds": False}


def _doc() -> dict:
    machine = {"cpu_count": 2, "processor": "x86_64", "torch_threads": 2, "torch": "2", "onnxruntime": "1",
               "onnx2fx": "0.1.0"}
    settings = {"epochs": 1, "adaround_iterations": 100, "adaround_models": ["digits"], "batch_size": 32,
                "real_calib_samples": 32, "real_train_samples": 256, "real_eval_samples": 32,
                "real_in_source_samples": 48}
    ptq = {"method": "mse + bias correction", "sqnr_db": 17.085, "agreement": 0.875,
           "qdq_within_one_step_of_sim": 1.0, "seconds": 32.17, "in_source_sqnr_db": 11.911}
    tuned = {"distillation": "auto", "steps": 8, "sqnr_db": 18.925, "agreement": 0.9375,
             "qdq_within_one_step_of_sim": 0.96875, "seconds": 17.22, **qft_compare.sqnr_goal(17.085, 18.925),
             "in_source_sqnr_db": 13.787, "in_source_gain_db": 1.876}
    return {"command": "python benchmarks/qft_compare.py --models ppocr_cls", "machine": machine,
            "settings": settings, "seconds": 60.0, "qft_learning_rates": "weights 0.0001",
            "models": {"ppocr_cls": {"title": "PP-OCR cls", "task": "classifier", "notes": ["text lines"],
                                     "rows": [{"setting": "W4A8", "train_samples": 256, "ptq": ptq,
                                               "qft": [tuned]}]},
                       "yolov8n": {"error": "CorpusUnavailable: offline"}}}


def test_real_model_rows_have_their_own_table_and_goal() -> None:
    section = qft_compare.markdown(_doc())
    lines = section.splitlines()
    assert lines[0] == qft_compare.BEGIN and lines[-1] == qft_compare.END
    assert "### The real-weight models at W4A8" in lines
    assert "### The digits models at W4A8 and W4A4" not in lines
    assert "**Goal: QFT raises the output SQNR of the best PTQ by >= 1 dB** (judged on the held-out images of " \
           "other sources)." in lines
    assert "| ppocr_cls | W4A8 | PTQ | mse + bias correction | 17.09 | | 11.91 | | 0.8750 (top-1 agreement) | " \
           "1.0000 | 32.17 | |" in lines
    assert "| ppocr_cls | W4A8 | + QFT (MSE) | 8 steps on 256 images | 18.93 | +1.84 | 13.79 | +1.88 | 0.9375 | " \
           "0.9688 | 17.22 | holds |" in lines
    assert "| yolov8n | – | – | – | – | – | – | – | – | – | – | CorpusUnavailable: offline |" in lines
    assert any("on 48 further held-out images drawn from the calibration sources" in line for line in lines)
    assert "- ppocr_cls: text lines" in lines


def test_a_run_of_some_models_keeps_the_others_rows_and_names_their_command(tmp_path: Path) -> None:
    earlier = _doc()
    earlier["settings"]["adaround_models"] = ["digits", "ppocr_cls"]
    earlier["models"]["ppocr_cls"]["command"] = "python benchmarks/qft_compare.py --models ppocr_cls,yolov8n"
    results = tmp_path / "qft_compare.json"
    import json

    results.write_text(json.dumps(earlier))
    kept = qft_compare.earlier_models(results, ["yolov8n"])
    assert kept["adaround_models"] == ["ppocr_cls"]
    assert kept["ppocr_cls"]["command"] == "python benchmarks/qft_compare.py --models ppocr_cls,yolov8n"
    assert set(kept) == {"ppocr_cls", "adaround_models"}
    assert "yolov8n" in qft_compare.earlier_models(results, ["ppocr_cls"])  # an error entry is a result too
    assert qft_compare.earlier_models(results, ["ppocr_cls", "yolov8n"]) == {"adaround_models": []}
    assert qft_compare.earlier_models(tmp_path / "missing.json", ["yolov8n"]) == {}
    doc = _doc()
    doc["models"]["ppocr_cls"] = kept["ppocr_cls"]
    text = qft_compare.markdown(doc)
    assert ("The run took 1.0 minutes. ppocr_cls: measured earlier by "
            "`python benchmarks/qft_compare.py --models ppocr_cls,yolov8n`.") in text


def _seed(seed: int, float_correct: int, ptq: int, kl: int, mse: int) -> dict:
    def goal(correct: int) -> bool:
        return correct >= float_correct or (float_correct > ptq and 2 * (correct - ptq) >= float_correct - ptq)
    return {"seed": seed, "ptq_method": "mse", "float": float_correct, "ptq": ptq,
            "qft": {"kl": {"correct": kl, "goal_holds": goal(kl)}, "auto": {"correct": mse, "goal_holds": goal(mse)}}}


def test_seed_record_takes_the_counts_of_a_digits_row() -> None:
    row = {"setting": "W4A8", "float_correct": 871, "ptq": {"method": "mse", "correct": 870},
           "qft": [{"distillation": "kl", "correct": 871, "goal_holds": True},
                   {"distillation": "auto", "correct": 870, "goal_holds": False}]}
    assert qft_compare.seed_record(3, row) == _seed(3, 871, 870, 871, 870)
    assert qft_compare.seed_record(4, {"error": "ValueError: broken"}) == {"seed": 4, "error": "ValueError: broken"}


def test_seed_study_pools_the_images_lost_over_the_seeds_with_a_drop(tmp_path: Path) -> None:
    records = [_seed(0, 871, 870, 870, 870), _seed(1, 872, 866, 873, 870), _seed(2, 877, 876, 877, 876),
               _seed(4, 873, 874, 873, 874), {"seed": 5, "error": "ValueError: broken"}]
    assert qft_compare.pooled(records, "kl") == {"seeds_with_drop": 3, "lost": 8, "won": 8, "recovered": 1.0,
                                                 "goal_holds": True, "seeds_holding": 3, "seeds": 4}
    assert qft_compare.pooled(records, "auto") == {"seeds_with_drop": 3, "lost": 8, "won": 4, "recovered": 0.5,
                                                   "goal_holds": True, "seeds_holding": 2, "seeds": 4}
    assert qft_compare.pooled(records[:1], "auto")["goal_holds"] is False
    assert qft_compare.pooled(records[3:4], "kl") == {"seeds_with_drop": 0, "lost": 0, "won": 0, "recovered": None,
                                                      "goal_holds": False, "seeds_holding": 1, "seeds": 1}
    study = {"command": "python benchmarks/qft_compare.py --models digits", "setting": "W4A8", "main_seed": 0,
             "objectives": ["kl", "auto"], "seeds": [0, 1, 2, 4, 5], "models": {"digits": records}}
    lines = qft_compare.seed_lines(study)
    assert "| digits | 0 | mse | 871 | 870 (-1) | 870 (+0), misses | 870 (+0), misses |" in lines
    assert "| digits | 4 | mse | 873 | 874 (+1) | 873 (-1) | 874 (+0) |" in lines
    assert "| digits | 5 | ValueError: broken | – | – | – | – |" in lines
    assert ("| digits | 100 % (8 of 8 images, 3 seeds with a drop) | 3 of 4 | 50 % (4 of 8 images, 3 seeds with a "
            "drop) | 2 of 4 | KL holds, MSE holds |") in lines
    # a run of other models keeps the study; a run of a digits model replaces it
    import json

    doc = _doc()
    doc["digits_seeds"] = study
    (tmp_path / "qft_compare.json").write_text(json.dumps(doc))
    assert qft_compare.earlier_models(tmp_path / "qft_compare.json", ["ppocr_cls"])["digits_seeds"] == study
    assert "digits_seeds" not in qft_compare.earlier_models(tmp_path / "qft_compare.json", ["digits"])
