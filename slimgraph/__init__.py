"""slimgraph: structured pruning of PyTorch models by graph rewriting.

>>> import torch, slimgraph as sg
>>> net = torch.nn.Sequential(torch.nn.Conv2d(3, 16, 3), torch.nn.ReLU(), torch.nn.Conv2d(16, 8, 3))
>>> result = sg.slim(net, (torch.randn(1, 3, 16, 16),), ratio=0.5)
>>> result.model[0].out_channels
8
"""

from slimgraph import viz
from slimgraph.api import SlimResult, slim
from slimgraph.batchnorm import recalibrate_bn
from slimgraph.bench import BenchReport, compare
from slimgraph.calibration import calibrate
from slimgraph.config import PruneConfig
from slimgraph.depgraph import DependencyGraph, Group
from slimgraph.errors import (
    ModelSpecError,
    PlanError,
    RecoverError,
    RewriteError,
    RuleTableError,
    SlimGraphError,
    TraceError,
    UsageError,
)
from slimgraph.export import (
    ExportArgumentError,
    ExportError,
    ExportReport,
    ModelCallError,
    ParityError,
    export_onnx,
)
from slimgraph.hf import load, save
from slimgraph.importance import register as register_importance
from slimgraph.latency import LatencyReport, measure_latency
from slimgraph.macs import count_macs, count_params
from slimgraph.penalty import group_penalty
from slimgraph.plan import Fold, GroupCut, PruningPlan
from slimgraph.planner import plan
from slimgraph.recover import RecoverReport, recover
from slimgraph.review import PlanSummary
from slimgraph.rewrite import apply
from slimgraph.schedule import IterativeResult, prune_iteratively
from slimgraph.sparsify import SparsityReport, sparsify
from slimgraph.trace import trace
from slimgraph.weights import load_weights, save_weights

__all__ = [
    "trace",
    "plan",
    "apply",
    "slim",
    "SlimResult",
    "PlanSummary",
    "viz",
    "PruneConfig",
    "PruningPlan",
    "Fold",
    "GroupCut",
    "DependencyGraph",
    "Group",
    "count_macs",
    "count_params",
    "register_importance",
    "export_onnx",
    "measure_latency",
    "LatencyReport",
    "compare",
    "recalibrate_bn",
    "prune_iteratively",
    "IterativeResult",
    "recover",
    "RecoverReport",
    "group_penalty",
    "calibrate",
    "sparsify",
    "SparsityReport",
    "BenchReport",
    "ExportReport",
    "save",
    "load",
    "save_weights",
    "load_weights",
    "SlimGraphError",
    "TraceError",
    "RuleTableError",
    "PlanError",
    "RewriteError",
    "ModelSpecError",
    "UsageError",
    "RecoverError",
    "ExportError",
    "ExportArgumentError",
    "ModelCallError",
    "ParityError",
]
