"""
How good are the generated digits? Accuracy and Fréchet distance by an independent MNIST classifier.

The classifier (`pretrained/mnist-classifier/`, a transformers image-classification model) plays the role that the
Inception network plays for FID: it reads each generated digit (is it the digit we asked for?) and its pooled
penultimate features are the space where the Fréchet distance between generated and real digits is measured.
Because a Fréchet distance estimated from n samples is biased upwards, every distance is reported next to the
*real floor*: the distance between n real training digits and the test set, at the same n.

One module per concept: `scores` (accuracy, Fréchet distance, the real floor), `cache` (results kept under a hash of
what made them), `sampling` (loading, checking and drawing the digits), `cas` (the Classification Accuracy Score, the
only part that trains), `default_rule` (the stored default guidance), `append` (adding runs to an earlier evaluation)
and `sweep` (`scripts/evaluate.py`). Their public names are here too.
"""

from .append import APPEND_KEYS, append_runs, appendable_problems, check_appendable
from .cache import cache_path, kept, run_cache_dir
from .cas import cas_cache_path, classification_accuracy_score, real_training_digits
from .default_rule import DEFAULT_RULE, choose_default, store_default, store_in_model_index, worst_digit_accuracy
from .sampling import SetupError, generate_balanced, load_data, load_pipeline, plan_runs
from .scores import accuracy_report, feature_statistics, frechet_distance, frechet_distance_between, real_floor
from .sweep import build_parser, evaluate, main
