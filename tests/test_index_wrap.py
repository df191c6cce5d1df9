"""The per-neuron kernels find each neuron's parameter at n % count by a multiply and a shift
(IndexWrap, cuda/qif_buffers.h); tests/index_wrap_check.cc compares it with the % operator over
divisors and numerators up to and beyond its range. Built here with the C++ compiler that builds
the CPU library (the CPU parity tests use it too, but only with small neuron counts)."""

import pathlib
import shutil
import subprocess

import pytest

REPO = pathlib.Path(__file__).resolve().parents[1]


def test_index_wrap_equals_the_modulo(tmp_path):
    compiler = shutil.which("c++") or shutil.which("g++") or shutil.which("clang++")
    if compiler is None:
        pytest.skip("no C++ compiler")
    binary = tmp_path / "index_wrap_check"
    subprocess.run([compiler, "-std=c++20", "-O2", f"-I{REPO / 'cuda'}",
                    str(REPO / "tests" / "index_wrap_check.cc"), "-o", str(binary)], check=True)
    result = subprocess.run([str(binary)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 wrong" in result.stdout
