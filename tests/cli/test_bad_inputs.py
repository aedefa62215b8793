"""Bad command-line input, every command: exit status 2, one line naming the option, no traceback, no work.

The table is data: add a row ``(id, argv, expected fragment)``; ``{W}`` is a scratch directory with
bad paths in it, ``{CKPT}`` a deepzip model file of an untrained digits LeNet-300-100 (``{CKPTQ}``
the same pruned and weight-shared), ``{DZ}`` a .dz of it, ``{DZ28}`` a .dz of a 28x28 model,
``{DZLIST}`` a .dz whose metadata is a list, ``{LOT_*}`` lottery directories. No row trains: every check runs before any work starts (the test checks that
no run directory appears).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from deepzip.cli import main

DIGITS = ["--dataset", "digits", "--train-val-size", "300"]
TINY = ["--train-epochs", "1", "--prune-retrain-epochs", "1", "--quant-finetune-epochs", "0"]
COMPRESS = ["compress", *DIGITS, *TINY]
LOTTERY = ["lottery", "run", *DIGITS, "--levels", "1", "--replicates", "1", "--train-epochs", "1"]
TRAIN = ["train", "--dataset", "digits", "--val-size", "300", "--epochs", "1"]
SWEEP = ["sweep", "run", "--dataset", "digits", "--val-size", "300", "--epochs", "1"]

ROWS = [
    # ---- the deepzip command itself
    ("threads 0", ["--threads", "0", "inspect", "{DZ}"], "--threads must be >= 1"),
    ("no command", [], "required: COMMAND"),
    ("unknown command", ["compres"], "invalid choice: 'compres'"),
    # ---- demo
    ("demo runs-dir is a file", ["demo", "--runs-dir", "{W}/notes.txt"], "--runs-dir: {W}/notes.txt is a file"),
    ("demo data-dir empty", ["demo", "--runs-dir", "{W}/runs", "--data-dir", "{W}/empty"], "--data-dir: data directory"),
    # ---- train
    ("train lr inf", [*TRAIN, "--lr", "inf"], "argument --lr: expected a finite number, got 'inf'"),
    ("train lr nan", [*TRAIN, "--lr", "nan"], "argument --lr: expected a finite number"),
    ("train lr -1", [*TRAIN, "--lr", "-1"], "--lr must be > 0, got -1.0"),
    ("train momentum nan", [*TRAIN, "--momentum", "nan"], "argument --momentum: expected a finite number"),
    ("train weight-decay inf", [*TRAIN, "--weight-decay", "inf"], "argument --weight-decay: expected a finite"),
    ("train epochs 0", [*TRAIN, "--epochs", "0"], "--epochs must be > 0, got 0"),
    ("train batch-size -1", [*TRAIN, "--batch-size", "-1"], "--batch-size must be > 0"),
    ("train lr-gamma 0", [*TRAIN, "--lr-gamma", "0"], "--lr-gamma must be in (0, 1]"),
    ("train seed -1", [*TRAIN, "--seed", "-1"], "--seed must be >= 0, got -1"),
    ("train optimizer rmsprop", [*TRAIN, "--optimizer", "rmsprop"], "invalid choice: 'rmsprop'"),
    ("train device gpu", [*TRAIN, "--device", "gpu"], "--device: unknown device 'gpu'; use auto"),
    ("sparse-train unknown method", ["sparse-train", "--method", "magic"], "argument --method: invalid choice: 'magic'"),
    ("sparse-train sparsity 1.5", ["sparse-train", "--dataset", "digits", "--sparsity", "1.5"],
     "--sparsity must be in [0.0, 1.0), got 1.5"),
    ("sparse-train srste with sparsity", ["sparse-train", "--dataset", "digits", "--method", "srste", "--sparsity", "0.95"],
     "option sparsity=0.95 does not apply to method 'srste'"),
    ("sparse-train distribution", ["sparse-train", "--dataset", "digits", "--distribution", "gaussian"],
     "--distribution: distribution='gaussian' is not allowed; choose from uniform, er, erk"),
    ("compress-pretrained unknown method", ["compress-pretrained", "{W}", "--calibration", "{W}/notes.txt",
                                            "--method", "magic"], "argument --method: invalid choice: 'magic'"),
    ("compress-pretrained sparsity 1.5", ["compress-pretrained", "{W}", "--calibration", "{W}/notes.txt",
                                          "--sparsity", "1.5"], "--sparsity must be in [0.0, 1.0), got 1.5"),
    ("compress-pretrained percdamp for wanda", ["compress-pretrained", "{W}", "--calibration", "{W}/notes.txt",
                                                "--percdamp", "0.1"], "--percdamp: 0.1 does not apply to method wanda"),
    ("compress-pretrained no model", ["compress-pretrained", "{W}/nothing", "--calibration", "{W}/notes.txt"],
     "MODEL_DIR: {W}/nothing does not exist"),
    ("compress-pretrained no text", ["compress-pretrained", "{W}", "--calibration", "{W}/none.txt"],
     "--calibration: {W}/none.txt is not a file"),
    ("sparse-train update-interval 0", ["sparse-train", "--dataset", "digits", "--update-interval", "0"],
     "--update-interval must be >= 1, got 0"),
    ("sparse-train device gpu", ["sparse-train", "--dataset", "digits", "--device", "gpu"], "--device: unknown device 'gpu'"),
    ("train model module missing", [*TRAIN, "--model", "no_such_module_xyz:net"],
     "--model: model 'no_such_module_xyz:net': cannot import 'no_such_module_xyz'"),
    ("train model function missing", [*TRAIN, "--model", "json:no_such_function"],
     "--model: model 'json:no_such_function': json has no function 'no_such_function'"),
    ("train model not a module", [*TRAIN, "--model", "json:dumps"], "calling it failed: TypeError"),
    ("train dataset function missing", ["train", "--dataset", "json:nope"], "json has no function 'nope'"),
    ("train dataset returns junk", ["train", "--dataset", "os:getcwd"], "must return (train, val, test) Datasets"),
    ("train device tpu", [*TRAIN, "--device", "xla"], "--device: unsupported device 'xla'; use auto"),
    ("train amp fp8", [*TRAIN, "--amp", "fp8"], "argument --amp: invalid choice: 'fp8'"),
    ("compress device gpu", [*COMPRESS, "--device", "gpu"], "--device: unknown device 'gpu'"),
    ("prune device gpu", ["prune", "--checkpoint", "{CKPT}", "--device", "gpu"], "--device: unknown device 'gpu'"),
    ("quantize device gpu", ["quantize", "--checkpoint", "{CKPT}", "--device", "gpu"], "--device: unknown device 'gpu'"),
    ("evaluate device gpu", ["evaluate", "{DZ28}", "--device", "gpu"], "--device: unknown device 'gpu'"),
    ("lottery device gpu", [*LOTTERY, "--device", "gpu"], "--device: unknown device 'gpu'"),
    ("train unknown model", [*TRAIN, "--model", "vgg16"], "--model: model='vgg16' is not allowed; choose from conv2"),
    ("train val-size too big", ["train", "--dataset", "digits", "--val-size", "5000"], "--val-size must be in [0, 1500)"),
    ("train lenet5 on 8x8", [*TRAIN, "--model", "lenet5", "--runs-dir", "{W}/runs"], "--model: lenet5 needs inputs"),
    ("train runs-dir is a file", [*TRAIN, "--runs-dir", "{W}/notes.txt"], "--runs-dir: {W}/notes.txt is a file"),
    ("train runs-dir under a file", [*TRAIN, "--runs-dir", "{W}/notes.txt/runs"], "which is a file"),
    ("train runs-dir in /proc", [*TRAIN, "--runs-dir", "/proc/deepzip_runs"], "--runs-dir: cannot write in /proc"),
    ("train data-dir with digits", [*TRAIN, "--data-dir", "{W}/empty", "--runs-dir", "{W}/runs"],
     "--data-dir: digits comes with scikit-learn"),
    ("train data-dir missing", ["train", "--data-dir", "{W}/nowhere", "--runs-dir", "{W}/runs"],
     "--data-dir: data directory {W}/nowhere does not exist"),
    ("train data-dir empty", ["train", "--data-dir", "{W}/empty", "--runs-dir", "{W}/runs"],
     "lacks train-images-idx3-ubyte, train-labels-idx1-ubyte, t10k-images-idx3-ubyte"),
    ("train data-dir partial", ["train", "--data-dir", "{W}/partial", "--runs-dir", "{W}/runs"],
     "lacks train-images-idx3-ubyte, train-labels-idx1-ubyte (.gz or raw)"),
    ("train data-dir is a file", ["train", "--data-dir", "{W}/notes.txt", "--runs-dir", "{W}/runs"],
     "--data-dir: data directory {W}/notes.txt is not a directory"),
    ("train data-dir corrupt", ["train", "--data-dir", "{W}/corrupt", "--runs-dir", "{W}/runs"], "bad IDX magic"),
    # ---- prune
    ("prune missing checkpoint", ["prune", "--checkpoint", "{W}/missing.safetensors"], "--checkpoint: {W}/missing.safetensors does not exist"),
    ("prune checkpoint is a directory", ["prune", "--checkpoint", "{W}/adir"], "--checkpoint: {W}/adir is a directory"),
    ("prune checkpoint text", ["prune", "--checkpoint", "{W}/notes.txt"], "--checkpoint: {W}/notes.txt: not a readable model file"),
    ("prune checkpoint .dz", ["prune", "--checkpoint", "{DZ}"], "not a readable model file"),
    ("prune plain safetensors", ["prune", "--checkpoint", "{W}/plain.safetensors"], "has no deepzip model description"),
    ("prune bad description", ["prune", "--checkpoint", "{W}/baddesc.safetensors"], "metadata 'deepzip' is not valid JSON"),
    ("prune sparsity 1.5", ["prune", "--checkpoint", "{CKPT}", "--sparsity", "1.5"], "--sparsity must be in [0, 1), got 1.5"),
    ("prune sparsity nan", ["prune", "--checkpoint", "{CKPT}", "--sparsity", "nan"], "argument --sparsity: expected a finite"),
    ("prune N>M", ["prune", "--checkpoint", "{CKPT}", "--method", "nm", "--n", "5", "--m", "4"], "--n/--m: N:M needs N <= M, got 5:4"),
    ("prune steps 0", ["prune", "--checkpoint", "{CKPT}", "--steps", "0"], "--steps must be >= 1"),
    ("prune retrain-lr inf", ["prune", "--checkpoint", "{CKPT}", "--retrain-lr", "inf"], "argument --retrain-lr: expected a finite"),
    ("prune l1 -1", ["prune", "--checkpoint", "{CKPT}", "--l1", "-1"], "--l1 must be a finite number >= 0, got -1.0"),
    ("prune exclude nosuch", ["prune", "--checkpoint", "{CKPT}", "--exclude", "nosuch", "--runs-dir", "{W}/runs"],
     "--exclude: cannot exclude unknown layer(s) nosuch"),
    ("prune scales nosuch", ["prune", "--checkpoint", "{CKPT}", "--method", "uniform", "--scales", "nosuch=0.5",
                             "--runs-dir", "{W}/runs"], "--scales: scales: unknown layer(s) nosuch"),
    ("prune layer-sparsity 1.5", ["prune", "--checkpoint", "{CKPT}", "--method", "fraction", "--layer-sparsity", "fc1=1.5",
                                  "--runs-dir", "{W}/runs"], "--layer-sparsity['fc1'] must be in [0.0, 1.0), got 1.5"),
    ("prune layer-sparsity partial", ["prune", "--checkpoint", "{CKPT}", "--method", "fraction", "--layer-sparsity",
                                      "fc1=0.5", "--runs-dir", "{W}/runs"], "--layer-sparsity: layer_sparsity: no value for layer fc2.weight"),
    ("prune layer-sparsity abc", ["prune", "--checkpoint", "{CKPT}", "--method", "fraction", "--layer-sparsity", "fc1=abc"],
     "--layer-sparsity: bad layer spec item 'fc1=abc'"),
    ("prune quality -1", ["prune", "--checkpoint", "{CKPT}", "--method", "threshold", "--quality", "-1",
                          "--runs-dir", "{W}/runs"], "--quality must be in [0.0, inf), got -1.0"),
    ("prune scales negative", ["prune", "--checkpoint", "{CKPT}", "--method", "uniform", "--scales", "fc1=-2",
                               "--runs-dir", "{W}/runs"], "--scales['fc1'] must be in [0.0, inf), got -2.0"),
    ("prune method nosuch", ["prune", "--checkpoint", "{CKPT}", "--method", "nosuch"], "invalid choice: 'nosuch'"),
    ("prune l0 penalty -1", ["prune", "--checkpoint", "{CKPT}", "--method", "l0", "--l0-penalty", "-1"],
     "--l0-penalty must be in [0.0, inf), got -1.0"),
    ("prune l0-lr with global", ["prune", "--checkpoint", "{CKPT}", "--l0-lr", "0.1"],
     "prune option l0_lr=0.1 does not apply to method 'global'"),
    ("prune l0 gradual", ["prune", "--checkpoint", "{CKPT}", "--method", "l0", "--schedule", "gradual"],
     "schedule='gradual' does not apply to method 'l0'"),
    ("prune l0 layer-sparsity partial", ["prune", "--checkpoint", "{CKPT}", "--method", "l0", "--layer-sparsity",
                                         "fc1=0.5", "--runs-dir", "{W}/runs"], "--layer-sparsity: layer_sparsity: no value for layer fc2.weight"),
    ("prune runs-dir is a file", ["prune", "--checkpoint", "{CKPT}", "--runs-dir", "{W}/notes.txt"], "--runs-dir: {W}/notes.txt is a file"),
    ("prune data-dir empty", ["prune", "--checkpoint", "{CKPT}", "--data-dir", "{W}/empty", "--runs-dir", "{W}/runs"],
     "--data-dir: digits comes with scikit-learn"),
    ("prune checkpoint 28x28 data-dir", ["prune", "--checkpoint", "{CKPT28}", "--data-dir", "{W}/partial",
                                         "--runs-dir", "{W}/runs"], "--data-dir: data directory"),
    # ---- sensitivity
    ("sensitivity sparsities 1.5", ["sensitivity", "--checkpoint", "{CKPT}", "--sparsities", "0.5", "1.5"],
     "--sparsities: 1.5 is out of range; each sparsity must be in [0, 1)"),
    ("sensitivity sparsities nan", ["sensitivity", "--checkpoint", "{CKPT}", "--sparsities", "nan"], "--sparsities: nan is out of range"),
    ("sensitivity sparsities abc", ["sensitivity", "--checkpoint", "{CKPT}", "--sparsities", "abc"], "invalid float value: 'abc'"),
    ("sensitivity -o txt", ["sensitivity", "--checkpoint", "{CKPT}", "-o", "{W}/s.txt"], "--output: {W}/s.txt: unsupported file type '.txt'; allowed: .png"),
    ("sensitivity -o directory", ["sensitivity", "--checkpoint", "{CKPT}", "-o", "{W}/adir"], "--output: {W}/adir is a directory"),
    ("sensitivity -o under a file", ["sensitivity", "--checkpoint", "{CKPT}", "-o", "{W}/notes.txt/s.png"], "--output: cannot write {W}/notes.txt/s.png"),
    ("sensitivity -o in /proc", ["sensitivity", "--checkpoint", "{CKPT}", "-o", "/proc/s.png"], "--output: cannot write /proc/s.png"),
    ("sensitivity checkpoint dir", ["sensitivity", "--checkpoint", "{W}/adir"], "--checkpoint: {W}/adir is a directory"),
    # ---- quantize
    ("quantize bits-fc 0", ["quantize", "--checkpoint", "{CKPT}", "--bits-fc", "0"], "--bits-fc must be in 1..16, got 0"),
    ("quantize bits-conv 17", ["quantize", "--checkpoint", "{CKPT}", "--bits-conv", "17"], "--bits-conv must be in 1..16"),
    ("quantize bits fc1=2.7", ["quantize", "--checkpoint", "{CKPT}", "--bits", "fc1=2.7", "--runs-dir", "{W}/runs"],
     "--bits['fc1'] must be an integer in 1..16, got 2.7"),
    ("quantize bits fc1=40", ["quantize", "--checkpoint", "{CKPT}", "--bits", "fc1=40", "--runs-dir", "{W}/runs"], "--bits['fc1'] must be an integer in 1..16, got 40"),
    ("quantize bits 6", ["quantize", "--checkpoint", "{CKPT}", "--bits", "6", "--runs-dir", "{W}/runs"], "--bits: bits must look like 'fc3=6,conv1=8', got '6'"),
    ("quantize bits nosuch", ["quantize", "--checkpoint", "{CKPT}", "--bits", "nosuch=4", "--runs-dir", "{W}/runs"],
     "--bits: bits: unknown layer(s) nosuch"),
    ("quantize exclude nosuch", ["quantize", "--checkpoint", "{CKPT}", "--exclude", "nosuch", "--runs-dir", "{W}/runs"],
     "--exclude: cannot exclude unknown layer(s) nosuch"),
    ("quantize init nosuch", ["quantize", "--checkpoint", "{CKPT}", "--init", "nosuch"], "invalid choice: 'nosuch'"),
    ("quantize finetune-lr inf", ["quantize", "--checkpoint", "{CKPT}", "--finetune-lr", "inf"], "argument --finetune-lr: expected a finite"),
    ("quantize seed -3", ["quantize", "--checkpoint", "{CKPT}", "--seed", "-3"], "--seed must be >= 0"),
    ("quantize already quantized", ["quantize", "--checkpoint", "{CKPTQ}", "--runs-dir", "{W}/runs"],
     "--checkpoint: fc1.weight is already weight-shared"),
    ("quantize checkpoint .dz", ["quantize", "--checkpoint", "{DZ}"], "--checkpoint: {DZ}: not a readable model file"),
    ("quantize runs-dir in /proc", ["quantize", "--checkpoint", "{CKPT}", "--runs-dir", "/proc/x"], "--runs-dir: cannot write in /proc/x"),
    # ---- compress
    ("compress quant-bits fc1=2.7", [*COMPRESS, "--quant-bits", "fc1=2.7", "--runs-dir", "{W}/runs"], "--quant-bits['fc1'] must be an integer in 1..16, got 2.7"),
    ("compress quant-bits nosuch", [*COMPRESS, "--quant-bits", "nosuch=4", "--runs-dir", "{W}/runs"], "--quant-bits: bits: unknown layer(s) nosuch"),
    ("compress quant-exclude nosuch", [*COMPRESS, "--quant-exclude", "nosuch", "--runs-dir", "{W}/runs"], "--quant-exclude: cannot exclude unknown layer(s) nosuch"),
    ("compress prune-exclude nosuch", [*COMPRESS, "--prune-exclude", "nosuch", "--runs-dir", "{W}/runs"], "--prune-exclude: cannot exclude unknown layer(s) nosuch"),
    ("compress layer-sparsity 1.5", [*COMPRESS, "--prune-method", "fraction", "--prune-layer-sparsity", "fc1=1.5",
                                     "--runs-dir", "{W}/runs"], "--prune-layer-sparsity['fc1'] must be in [0.0, 1.0), got 1.5"),
    ("compress layer-sparsity kind nosuch", [*COMPRESS, "--prune-method", "fraction", "--prune-layer-sparsity", "fc=0.5,nosuch=0.5",
                                             "--runs-dir", "{W}/runs"], "--prune-layer-sparsity: layer_sparsity: unknown layer(s) nosuch"),
    ("compress lr inf", [*COMPRESS, "--train-lr", "inf"], "argument --train-lr: expected a finite number, got 'inf'"),
    ("compress momentum nan", [*COMPRESS, "--train-momentum", "nan"], "argument --train-momentum: expected a finite"),
    ("compress prune-l1 inf", [*COMPRESS, "--prune-l1", "inf"], "argument --prune-l1: expected a finite"),
    ("compress quant-finetune-lr inf", [*COMPRESS, "--quant-finetune-lr", "inf"], "argument --quant-finetune-lr: expected"),
    ("compress sparsity 92", [*COMPRESS, "--prune-sparsity", "92"], "--prune-sparsity must be in [0, 1), got 92.0"),
    ("compress seed -1", [*COMPRESS, "--train-seed", "-1"], "--train-seed must be >= 0, got -1"),
    ("compress prune-seed -1", [*COMPRESS, "--prune-seed", "-1"], "--prune-seed must be >= 0"),
    ("compress N:M 0:4", [*COMPRESS, "--prune-method", "nm", "--prune-n", "0"], "--prune-n must be >= 1, got 0"),
    ("compress round-to 0", [*COMPRESS, "--prune-round-to", "0"], "--prune-round-to must be >= 1, got 0"),
    ("compress unknown model", [*COMPRESS, "--model", "resnet50"], "--model: 'resnet50' is not allowed; choose from conv2"),
    ("compress unknown dataset", ["compress", "--dataset", "cifar10"], "--dataset: 'cifar10' is not allowed; choose from fashion-mnist"),
    ("compress val-size too big", ["compress", "--dataset", "digits", "--runs-dir", "{W}/runs"], "--train-val-size must be in [0, 1500) for digits, got 5000"),
    ("compress lenet5 on digits", [*COMPRESS, "--model", "lenet5", "--runs-dir", "{W}/runs"], "--model: lenet5 needs inputs of at least 16x16"),
    ("compress float-dtype f8", [*COMPRESS, "--float-dtype", "f8"], "invalid choice: 'f8'"),
    ("compress runs-dir is a file", [*COMPRESS, "--runs-dir", "{W}/notes.txt"], "--runs-dir: {W}/notes.txt is a file"),
    ("compress runs-dir under a file", [*COMPRESS, "--runs-dir", "{W}/notes.txt/runs"], "--runs-dir: {W}/notes.txt/runs is under"),
    ("compress runs-dir in /proc", [*COMPRESS, "--runs-dir", "/proc/deepzip_runs"], "--runs-dir: cannot write in /proc/deepzip_runs"),
    ("compress data-dir missing", ["compress", "--data-dir", "{W}/nowhere", "--runs-dir", "{W}/runs"], "--data-dir: data directory {W}/nowhere does not exist"),
    ("compress data-dir partial", ["compress", "--data-dir", "{W}/partial", "--runs-dir", "{W}/runs"], "lacks train-images-idx3-ubyte"),
    ("compress data-dir corrupt", ["compress", "--data-dir", "{W}/corrupt", "--runs-dir", "{W}/runs"], "bad IDX magic"),
    # ---- inspect
    ("inspect missing", ["inspect", "{W}/missing.dz"], "cannot read (No such file or directory)"),
    ("inspect directory", ["inspect", "{W}/adir"], "cannot read (Is a directory)"),
    ("inspect text", ["inspect", "{W}/notes.txt"], "a .dz file has at least"),
    ("inspect safetensors", ["inspect", "{CKPT}"], "not a deepzip file"),
    # ---- evaluate
    ("evaluate wrong shape", ["evaluate", "{DZ28}", "--dataset", "digits"],
     "--dataset: digits has inputs of shape (1, 8, 8) but the model in {DZ28} takes (1, 28, 28)"),
    *([("train device cuda without a GPU", [*TRAIN, "--device", "cuda:0"], "no CUDA GPU is available here")]
      if not torch.cuda.is_available() else []),
    ("evaluate metadata list", ["evaluate", "{DZLIST}"], "{DZLIST}: header 'metadata' must be an object"),
    ("evaluate unknown dataset", ["evaluate", "{DZ}", "--dataset", "imagenet"], "--dataset: unknown data set 'imagenet'"),
    ("evaluate data-dir empty", ["evaluate", "{DZ28}", "--dataset", "fashion-mnist", "--data-dir", "{W}/empty"],
     "--data-dir: data directory {W}/empty lacks"),
    ("evaluate data-dir partial", ["evaluate", "{DZ28}", "--dataset", "fashion-mnist", "--data-dir", "{W}/partial"],
     "--data-dir: data directory {W}/partial lacks train-images"),
    ("evaluate data-dir missing", ["evaluate", "{DZ28}", "--dataset", "fashion-mnist", "--data-dir", "{W}/nowhere"], "does not exist"),
    ("evaluate data-dir is the .dz", ["evaluate", "{DZ28}", "--dataset", "fashion-mnist", "--data-dir", "{DZ28}"], "is not a directory"),
    ("evaluate data-dir with digits", ["evaluate", "{DZ}", "--data-dir", "{W}/empty"], "--data-dir: digits comes with scikit-learn"),
    ("evaluate directory", ["evaluate", "{W}/adir"], "FILE: {W}/adir is a directory"),
    ("evaluate missing", ["evaluate", "{W}/missing.dz"], "FILE: {W}/missing.dz does not exist"),
    ("evaluate safetensors", ["evaluate", "{CKPT}"], "not a deepzip file"),
    # ---- decompress
    ("decompress -o directory", ["decompress", "{DZ}", "-o", "{W}/adir"], "--output: {W}/adir is a directory"),
    ("decompress -o under a file", ["decompress", "{DZ}", "-o", "{W}/notes.txt/x.safetensors"], "--output: cannot write {W}/notes.txt/x.safetensors"),
    ("decompress -o in /proc", ["decompress", "{DZ}", "-o", "/proc/x.safetensors"], "--output: cannot write /proc/x.safetensors"),
    ("decompress -o /", ["decompress", "{DZ}", "-o", "/"], "--output: / is a directory"),
    ("decompress no -o", ["decompress", "{DZ}"], "required: --output/-o"),
    ("decompress text", ["decompress", "{W}/notes.txt", "-o", "{W}/out.safetensors"], "a .dz file has at least"),
    # ---- bench
    ("bench repeats 0", ["bench", "{DZ}", "--repeats", "0"], "repeats must be >= 1, got 0"),
    ("bench mode fast", ["bench", "{DZ}", "--mode", "fast"], "invalid choice: 'fast'"),
    ("bench directory", ["bench", "{W}/adir"], "cannot read (Is a directory)"),
    # ---- lottery
    ("lottery no action", ["lottery"], "required: ACTION"),
    ("lottery levels -1", [*LOTTERY, "--levels", "-1"], "--levels and rewind_iteration must be >= 0"),
    ("lottery fc-rate 1.0", [*LOTTERY, "--fc-rate", "1.0"], "--fc-rate must be in [0, 1), got 1.0"),
    ("lottery fc-rate nan", [*LOTTERY, "--fc-rate", "nan"], "argument --fc-rate: expected a finite"),
    ("lottery jobs 0", [*LOTTERY, "--jobs", "0"], "--jobs: must be >= 1, got 0"),
    ("lottery jobs with ray", [*LOTTERY, "--executor", "ray", "--jobs", "2"], "--jobs: applies to the local executor"),
    ("lottery ray-address locally", [*LOTTERY, "--ray-address", "auto"], "--executor: --ray-address, --cpus-per-step"),
    ("lottery gpus-per-step -1", [*LOTTERY, "--executor", "ray", "--gpus-per-step", "-1"], "--gpus-per-step: must be >= 0"),
    ("lottery gpus without cuda", [*LOTTERY, "--executor", "ray", "--gpus-per-step", "1"], "--gpus-per-step: needs --device cuda"),
    ("lottery executor dask", [*LOTTERY, "--executor", "dask"], "invalid choice: 'dask'"),
    ("lottery reset nosuch", [*LOTTERY, "--reset", "nosuch"], "invalid choice: 'nosuch'"),
    ("lottery controls foo", [*LOTTERY, "--controls", "foo"], "--controls: unknown controls foo; allowed: reinit, random"),
    ("lottery oneshot maybe", [*LOTTERY, "--oneshot", "maybe"], "expected true or false, got 'maybe'"),
    ("lottery train-lr inf", [*LOTTERY, "--train-lr", "inf"], "argument --train-lr: expected a finite"),
    ("lottery seed -1", [*LOTTERY, "--seed", "-1"], "--seed must be >= 0"),
    ("lottery runs-dir is a file", [*LOTTERY, "--runs-dir", "{W}/notes.txt"], "--runs-dir: {W}/notes.txt is a file"),
    ("lottery data-dir with digits", [*LOTTERY, "--data-dir", "{W}/empty", "--runs-dir", "{W}/runs"], "--data-dir: digits comes"),
    ("lottery model on 8x8", [*LOTTERY, "--model", "lenet5", "--runs-dir", "{W}/runs"], "--model: lenet5 needs inputs"),
    ("lottery status missing", ["lottery", "status", "{W}/nowhere"], "DIRECTORY: {W}/nowhere is not a lottery experiment directory"),
    ("lottery status file", ["lottery", "status", "{W}/notes.txt"], "is not a lottery experiment directory"),
    ("lottery status corrupt config", ["lottery", "status", "{LOT_CORRUPT}"], "DIRECTORY: {LOT_CORRUPT}/config.json is not readable JSON"),
    ("lottery status bad values", ["lottery", "status", "{LOT_BADVALUES}"], "DIRECTORY: {LOT_BADVALUES}/config.json does not hold valid experiment settings (epochs must be > 0"),
    ("lottery status missing keys", ["lottery", "status", "{LOT_NOKEYS}"], "does not hold valid experiment settings"),
    ("lottery plot corrupt config", ["lottery", "plot", "{LOT_CORRUPT}"], "is not readable JSON"),
    # ---- sweep
    ("sweep no action", ["sweep"], "required: ACTION"),
    ("sweep unknown method", [*SWEEP, "--methods", "rigl,magic"], "--methods: unknown methods magic; allowed: static"),
    ("sweep methods empty", [*SWEEP, "--methods", ","], "--methods is empty; give at least one value"),
    ("sweep methods twice", [*SWEEP, "--methods", "set,set"], "--methods lists set more than once"),
    ("sweep sparsity 1.5", [*SWEEP, "--sparsities", "0.9,1.5"], "--sparsities must be numbers in [0, 1) (e.g. 0.9,0.95), got 1.5"),
    ("sweep sparsity text", [*SWEEP, "--sparsities", "ninety"], "--sparsities must be numbers in [0, 1)"),
    ("sweep seeds -1", [*SWEEP, "--seeds", "0,-1"], "--seeds must be integers >= 0 (e.g. 0,1,2), got -1"),
    ("sweep option for no method", [*SWEEP, "--methods", "static", "--update-interval", "10"],
     "option --update-interval=10 applies to none of the sweep's methods (static); it applies to set, rigl, snfs"),
    ("sweep srste sparsities", [*SWEEP, "--methods", "srste", "--sparsities", "0.8"],
     "--sparsities='0.8' applies to none of the sweep's methods (srste)"),
    ("sweep update-interval 0", [*SWEEP, "--update-interval", "0"], "method set: --update-interval must be >= 1, got 0"),
    ("sweep jobs 0", [*SWEEP, "--jobs", "0"], "--jobs: must be >= 1, got 0"),
    ("sweep max-retries locally", [*SWEEP, "--max-retries", "5"], "--executor: --ray-address, --cpus-per-step, --gpus-per-step and --max-retries need --executor ray"),
    ("sweep max-retries -1", [*SWEEP, "--executor", "ray", "--max-retries", "-1"], "--max-retries: must be >= 0, got -1"),
    ("sweep gpus without cuda", [*SWEEP, "--executor", "ray", "--gpus-per-step", "1"], "--gpus-per-step: needs --device cuda"),
    ("sweep runs-dir is a file", [*SWEEP, "--runs-dir", "{W}/notes.txt"], "--runs-dir: {W}/notes.txt is a file"),
    ("sweep status missing", ["sweep", "status", "{W}/nowhere"], "DIRECTORY: {W}/nowhere is not a sweep directory"),
    ("lottery max-retries -1", [*LOTTERY, "--executor", "ray", "--max-retries", "-1"], "--max-retries: must be >= 0, got -1"),
    ("lottery plot -o a file", ["lottery", "plot", "{LOT_OK}", "-o", "{W}/notes.txt"], "--output: {W}/notes.txt is a file"),
]

RUN_PREFIXES = ("train_", "prune_", "quantize_", "compress_", "lottery_", "sweep_", "sparse_")


@pytest.fixture(scope="module")
def work(tmp_path_factory):
    import torch
    from safetensors.torch import save_file

    import deepzip
    from deepzip import models
    from deepzip.checkpoint import save_model
    from deepzip.prune import prune
    from deepzip.quantize import quantize

    w = tmp_path_factory.mktemp("bad_inputs")
    (w / "notes.txt").write_text("not a model\n")
    for name in ("adir", "empty", "partial", "corrupt"):
        (w / name).mkdir()
    (w / "adir" / "x").write_text("x")
    for stem, shape in (("t10k-images-idx3-ubyte", (2, 28, 28)), ("t10k-labels-idx1-ubyte", (2,))):
        header = bytes([0, 0, 8, len(shape)]) + b"".join(s.to_bytes(4, "big") for s in shape)
        (w / "partial" / stem).write_bytes(header + bytes(int(torch.tensor(shape).prod())))
    for stem in ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"):
        (w / "corrupt" / stem).write_bytes(b"\x0c\x31\x99\x29 garbage")

    train_cfg = {"model": "lenet300_100", "dataset": "digits", "val_size": 300}
    model = models.build("lenet300_100", (1, 8, 8), 10, seed=0)
    save_model(w / "ckpt.safetensors", model, {**model._deepzip_description, "train_config": train_cfg})
    model28 = models.build("lenet300_100", (1, 28, 28), 10, seed=0)
    save_model(w / "ckpt28.safetensors", model28, {**model28._deepzip_description, "train_config": {}})
    save_file({"w": torch.zeros(2)}, str(w / "plain.safetensors"))
    save_file({"w": torch.zeros(2)}, str(w / "baddesc.safetensors"), metadata={"deepzip": "{not json"})
    prune(model, 0.9)
    quantize(model, bits=4)
    save_model(w / "ckptq.safetensors", model, {**model._deepzip_description, "train_config": train_cfg})
    deepzip.save(model, w / "digits.dz", metadata={"train_config": {"dataset": "digits", "val_size": 300}})
    deepzip.save(model, w / "list.dz", metadata=[1, 2, 3])
    deepzip.save(model28, w / "m28.dz", metadata={"train_config": {}})

    lottery = {"train": {"model": "lenet300_100", "dataset": "digits"}, "lottery": {"levels": 1}}
    for name, text in (("lot_ok", json.dumps(lottery)), ("lot_corrupt", "{'train': }"),
                       ("lot_badvalues", json.dumps({**lottery, "train": {"epochs": -1}})),
                       ("lot_nokeys", json.dumps({"train": {}}))):
        (w / name).mkdir()
        (w / name / "config.json").write_text(text)
    return w


def _fill(argv: list[str], w: Path) -> list[str]:
    names = {"W": w, "CKPT": w / "ckpt.safetensors", "CKPTQ": w / "ckptq.safetensors", "CKPT28": w / "ckpt28.safetensors", "DZ": w / "digits.dz",
             "DZ28": w / "m28.dz", "DZLIST": w / "list.dz", **{f"LOT_{n}": w / f"lot_{n.lower()}" for n in
                                                               ("OK", "CORRUPT", "BADVALUES", "NOKEYS")}}
    return [a.format(**{k: str(v) for k, v in names.items()}) for a in argv]


def _runs(w: Path) -> set[Path]:
    return {p for p in w.rglob("*") if p.is_dir() and p.name.startswith(RUN_PREFIXES)}


def test_table_is_large_and_covers_every_command():
    from deepzip.cli import COMMANDS

    assert len(ROWS) >= 60
    assert len({r[0] for r in ROWS}) == len(ROWS)
    covered = {next((a for a in argv if a in COMMANDS), None) for _, argv, _ in ROWS}
    assert set(COMMANDS) <= covered, set(COMMANDS) - covered


@pytest.mark.parametrize("argv, fragment", [r[1:] for r in ROWS], ids=[r[0] for r in ROWS])
def test_bad_invocation(work, capsys, argv, fragment):
    before = _runs(work)
    try:
        code = main(_fill(argv, work))
    except SystemExit as exc:  # argparse
        code = exc.code
    err = capsys.readouterr().err
    assert code == 2, err
    assert "Traceback" not in err
    assert _fill([fragment], work)[0] in err, err
    last = err.strip().splitlines()[-1]
    assert last.startswith("deepzip") and "error:" in last, err
    if not any(a in ("usage:",) for a in err.split()) and "usage:" not in err:
        assert len(err.strip().splitlines()) == 1, err  # deepzip's own errors: exactly one line
    assert _runs(work) == before, "work started before the input was checked"


@pytest.mark.parametrize("argv, fragment", [
    (["compress", "--dataset", "digits", "--train-val-size", "300", "--quant-bits", "fc1=2.7"], "--quant-bits['fc1'] must be an integer in 1..16, got 2.7"),
    (["evaluate", "{DZ28}", "--dataset", "digits"], "digits has inputs of shape"),
    (["decompress", "{DZ}", "-o", "{W}/adir"], "--output: {W}/adir is a directory"),
])
def test_subprocess_gives_one_line_and_status_2(work, argv, fragment):
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2] / "src"), "DEEPZIP_OFFLINE": "1"}
    result = subprocess.run([sys.executable, "-m", "deepzip", *_fill(argv, work)], capture_output=True, text=True,
                            env=env, cwd=work, timeout=120)
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert result.stderr.count("\n") == 1 and _fill([fragment], work)[0] in result.stderr
