"""Task metrics: evaluate a model in any of its forms on a dataset and compare the forms.

One concept per file: ``datasets`` (layouts and ground truth), ``task`` (the YAML task config and
its presets), ``preprocess`` / ``postprocess`` (images to inputs, outputs to predictions), ``runners``
(model forms in onnxruntime or torch), ``metrics`` (pycocotools' COCO metrics, top-k), ``comparison``
(``comparison.json`` with reference 004's grades), ``pictures`` (PNG drawings), ``evaluator`` (the
loop and the output folder) and ``shapes`` (a synthetic detection dataset for offline examples).
"""

from .comparison import compare_evaluations, grade, load_evaluation, write_comparison
from .datasets import Dataset, Sample, load_dataset
from .evaluator import EvaluationResult, EvaluationRun, evaluate, evaluate_form, write_run
from .metrics import classification_metrics, coco_metrics
from .runners import ModelForm, model_forms
from .task import TaskConfig, load_task_config, preset

__all__ = [
    "Dataset", "EvaluationResult", "EvaluationRun", "ModelForm", "Sample", "TaskConfig", "classification_metrics",
    "coco_metrics", "compare_evaluations", "evaluate", "evaluate_form", "grade", "load_dataset", "load_evaluation",
    "load_task_config", "model_forms", "preset", "write_comparison", "write_run",
]
