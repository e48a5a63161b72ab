"""slimgraph: structured pruning of PyTorch models by graph rewriting.

>>> import torch, slimgraph as sg
>>> net = torch.nn.Sequential(torch.nn.Conv2d(3, 16, 3), torch.nn.ReLU(), torch.nn.Conv2d(16, 8, 3))
>>> result = sg.slim(net, (torch.randn(1, 3, 16, 16),), ratio=0.5)
>>> result.model[0].out_channels
8
"""

from slimgraph.api import Mix, SlimResult, slim
from slimgraph.criteria.calibration import Calibration, calibrate
from slimgraph.criteria.config import PruneConfig
from slimgraph.criteria.latency import LatencyModel
from slimgraph.criteria.registry import register as register_importance
from slimgraph.errors import (
    BatchError,
    ExportArgumentError,
    ExportError,
    LoadError,
    ModelCallError,
    ModelSpecError,
    ParityError,
    PlanError,
    RecoverError,
    RewriteError,
    RuleTableError,
    SlimGraphError,
    TraceError,
    UsageError,
    WeightsError,
)
from slimgraph.export.onnx import ExportReport, export_onnx
from slimgraph.graph import viz
from slimgraph.graph.depgraph import DependencyGraph, Group
from slimgraph.graph.trace import trace
from slimgraph.io.checkpoint import apply_checkpoint, plan_checkpoint
from slimgraph.io.hf import load, save
from slimgraph.io.weights import load_weights, save_weights
from slimgraph.planner import plan
from slimgraph.resolve.cost import count_macs, count_params
from slimgraph.resolve.plan import Fold, GroupCut, PruningPlan
from slimgraph.resolve.summary import PlanSummary
from slimgraph.rewrite.apply import apply
from slimgraph.rewrite.depth import DepthResult, drop_blocks, find_blocks
from slimgraph.tools.batchnorm import recalibrate_bn
from slimgraph.tools.bench import BenchReport, compare
from slimgraph.tools.latency import LatencyReport, measure_latency
from slimgraph.tools.penalty import group_penalty
from slimgraph.tools.profile import profile_latency
from slimgraph.tools.recover import RecoverReport, recover
from slimgraph.tools.schedule import IterativeResult, prune_iteratively
from slimgraph.tools.sparsify import SparsityReport, sparsify

__all__ = [
    "trace",
    "plan",
    "apply",
    "slim",
    "SlimResult",
    "Mix",
    "drop_blocks",
    "find_blocks",
    "DepthResult",
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
    "profile_latency",
    "LatencyModel",
    "compare",
    "recalibrate_bn",
    "prune_iteratively",
    "IterativeResult",
    "recover",
    "RecoverReport",
    "group_penalty",
    "calibrate",
    "Calibration",
    "sparsify",
    "SparsityReport",
    "BenchReport",
    "ExportReport",
    "save",
    "load",
    "plan_checkpoint",
    "apply_checkpoint",
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
    "BatchError",
    "LoadError",
    "WeightsError",
]
