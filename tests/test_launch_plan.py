"""The CUDA launch plans (cuda/launch/plan.h), checked on the host: plan.h is free of CUDA
headers and takes the device's properties as a plain struct, so a small C++ program compiled
with g++ prints the choices for representative layouts. The expected values are worked out by
hand from choose_plan's rules (see the comments), for an H100 (132 multiprocessors, so the GPU
is "filled" at 132 x 1024 = 135168 threads) unless a case says otherwise."""

import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

PROGRAM = r"""
#include <cstdio>

#include "launch/plan.h"

using namespace jaxqif;
using namespace jaxqif::gpu;

struct Half16 { unsigned short bits; };  // a 16-bit input type: only its size matters to plans

const DeviceProperties kH100{132, 232448, 233472, 2048, 9};
const DeviceProperties kA100{108, 166912, 167936, 2048, 8};

const char* name(Plan plan) {
  switch (plan) {
    case Plan::kWide: return "wide";
    case Plan::kNarrow: return "narrow";
    case Plan::kNarrowLong: return "narrow_long";
    case Plan::kStagedDeep: return "staged_deep";
    case Plan::kStagedShallow: return "staged_shallow";
    case Plan::kSegmented: return "segmented";
  }
  return "?";
}

template <typename X>
void plan(const char* label, Layout l, bool backward, bool aligned = true,
          const DeviceProperties& device = kH100, bool per_neuron = false) {
  const int wide_vec = backward ? backward_wide_vec<X>(l.steps) : kWideVec<X>;
  LaunchPlan p = choose_plan(l, wide_vec, kStagedVec<X>, aligned, backward, device);
  if (per_neuron) p = per_neuron_plan(p);
  std::printf("plan %s %s %d %lld %d %d %u\n", label, name(p.plan), p.vec,
              static_cast<long long>(p.groups), p.threads_per_block, p.segments, p.blocks());
  auto print_shape = [&]<typename Sh>() {
    std::printf("shape %s %d %d %d\n", label, Sh::kVec, Sh::kChunk, Sh::kStaged ? 1 : 0);
  };
  const bool dispatched = backward
      ? dispatch_backward_plan<X>(p.plan, l.steps, print_shape)
      : dispatch_forward_plan<X>(p.plan, print_shape);
  if (!dispatched) std::printf("shape %s none\n", label);
}

template <typename X>
void vecs(const char* label) {
  std::printf("vecs %s %d %d %d %d %d %d\n", label, kWideVec<X>, kBackwardWideVec<X>,
              kBackwardShortVec<X>, kStagedVec<X>, backward_wide_vec<X>(kShortSteps),
              backward_wide_vec<X>(kShortSteps + 1));
}

template <typename X>
void undispatched(const char* label, Plan plan, bool backward) {
  auto fail = []<typename Sh>() { std::printf("dispatched\n"); };
  const bool dispatched =
      backward ? dispatch_backward_plan<X>(plan, 100, fail) : dispatch_forward_plan<X>(plan, fail);
  std::printf("undispatched %s %d\n", label, dispatched ? 1 : 0);
}

void fit(const char* label, size_t bytes_per_thread, const DeviceProperties& device) {
  const LaunchPlan p = fit_segments({Plan::kSegmented, 1, 64, 32 * kMaxSegments, kMaxSegments},
                                    bytes_per_thread, device);
  std::printf("fit %s %d %d\n", label, p.segments, p.threads_per_block);
}

int main() {
  vecs<Half16>("16bit");
  vecs<float>("float32");
  vecs<double>("float64");

  plan<float>("wide_f32", {1, 16, 1 << 20}, false);
  plan<Half16>("wide_16bit", {1, 16, 1 << 21}, false);
  plan<Half16>("narrow_16bit", {1, 16, 1 << 20}, false);
  plan<double>("wide_f64", {1, 16, 1 << 20}, false);
  plan<float>("narrow_odd", {1, 16, 150001}, false);
  plan<float>("narrow_unaligned", {1, 16, 1 << 20}, false, false);
  plan<float>("staged_deep_f32", {1, 1024, 1 << 14}, false);
  plan<Half16>("staged_deep_16bit", {1, 1024, 1 << 14}, false);
  plan<Half16>("staged_deep_rows", {2, 70, 200}, false);
  plan<float>("staged_shallow_64", {1, 256, 1 << 16}, false);
  plan<float>("staged_shallow_128", {1, 16, 1 << 17}, false);
  plan<float>("narrow_a100", {1, 16, 1 << 17}, false, true, kA100);
  plan<Half16>("narrow_long_odd", {1, 11, 37}, false);
  plan<float>("narrow_long_unaligned", {1, 1024, 1 << 14}, false, false);

  plan<float>("bwd_wide_short", {1, 3, 1 << 20}, true);
  plan<float>("bwd_wide", {1, 5, 1 << 20}, true);
  plan<Half16>("bwd_wide_16bit", {1, 5, 1 << 20}, true);
  plan<float>("bwd_narrow", {1, 16, 150001}, true);
  plan<float>("bwd_segmented_16", {1, 520, 64}, true);
  plan<Half16>("bwd_segmented_6", {1, 520, 40000}, true);
  plan<float>("bwd_segmented_2", {1, 520, 1 << 16}, true);
  plan<float>("bwd_segmented_1", {1, 520, 100000}, true);
  plan<Half16>("bwd_narrow_long_odd", {1, 11, 37}, true);
  plan<float>("bwd_narrow_long_unaligned", {1, 1024, 1 << 14}, true, false);

  // With per-neuron parameters (per_neuron_plan)
  plan<float>("per_neuron_wide_f32", {1, 16, 1 << 20}, false, true, kH100, true);
  plan<Half16>("per_neuron_wide_16bit", {1, 16, 1 << 21}, false, true, kH100, true);
  plan<float>("per_neuron_staged_deep_f32", {1, 1024, 1 << 14}, false, true, kH100, true);
  plan<float>("per_neuron_bwd_wide_short", {1, 3, 1 << 20}, true, true, kH100, true);
  plan<Half16>("per_neuron_bwd_wide_16bit", {1, 5, 1 << 20}, true, true, kH100, true);
  plan<float>("per_neuron_bwd_narrow", {1, 16, 150001}, true, true, kH100, true);
  plan<float>("per_neuron_bwd_segmented_2", {1, 520, 1 << 16}, true, true, kH100, true);

  undispatched<float>("fwd_segmented", Plan::kSegmented, false);
  undispatched<float>("bwd_staged_deep", Plan::kStagedDeep, true);
  undispatched<float>("bwd_staged_shallow", Plan::kStagedShallow, true);

  fit("f32_h100", 216, kH100);
  fit("f32_48k", 216, DeviceProperties{});
  fit("f32_grad_v_seq_48k", 312, DeviceProperties{});
  fit("16bit_48k", 144, DeviceProperties{});

  std::printf("bulk %d %d %d %d\n", kBulkThreads, BulkDeep<float>::kSharedBytes<float>,
              BulkShallow<float>::kSharedBytes<float>, BulkDeep<Half16>::kSharedBytes<Half16>);
  std::printf("resident h100 %lld %lld\n",
              static_cast<long long>(bulk_resident_blocks(BulkDeep<float>::kSharedBytes<float>,
                                                          kH100)),
              static_cast<long long>(
                  bulk_resident_blocks(BulkShallow<float>::kSharedBytes<float>, kH100)));
  std::printf("resident a100 %lld\n", static_cast<long long>(bulk_resident_blocks(
                                          BulkDeep<float>::kSharedBytes<float>, kA100)));
  return 0;
}
"""

# name: (plan, neurons per thread, groups, threads per block, segments, blocks)
PLANS = {
    # 2^20 / 4 = 262144 groups of 16 bytes >= 135168: wide.
    "wide_f32": ("wide", 4, 262144, 128, 1, 2048),
    # 16-bit: 8 neurons per 16 bytes, so 2^21 neurons make 262144 groups.
    "wide_16bit": ("wide", 8, 262144, 128, 1, 2048),
    # 2^20 / 8 = 131072 groups < 135168, but 2^20 neurons fill the GPU one per thread.
    "narrow_16bit": ("narrow", 1, 1 << 20, 128, 1, 8192),
    "wide_f64": ("wide", 2, 524288, 128, 1, 4096),
    # inner not a multiple of 4.
    "narrow_odd": ("narrow", 1, 150001, 128, 1, 1172),
    "narrow_unaligned": ("narrow", 1, 1 << 20, 128, 1, 8192),
    # 16384 neurons <= 135168 / 8: deep; fewer groups than 132 x 256: 32 threads a block.
    "staged_deep_f32": ("staged_deep", 1, 16384, 32, 1, 512),
    "staged_deep_16bit": ("staged_deep", 2, 8192, 32, 1, 256),
    "staged_deep_rows": ("staged_deep", 2, 200, 32, 1, 7),
    # 65536 groups: at least 132 x 256, below 132 x 512: 64 threads.
    "staged_shallow_64": ("staged_shallow", 1, 65536, 64, 1, 1024),
    "staged_shallow_128": ("staged_shallow", 1, 131072, 128, 1, 1024),
    # The same layout on 108 multiprocessors (filled at 110592): narrow.
    "narrow_a100": ("narrow", 1, 131072, 128, 1, 1024),
    # Odd inner for a 16-bit type: not stageable.
    "narrow_long_odd": ("narrow_long", 1, 37, 32, 1, 2),
    "narrow_long_unaligned": ("narrow_long", 1, 16384, 32, 1, 512),
    # Backward: short sequences (<= 4 steps) move 4 float32 neurons per thread, longer ones 2.
    "bwd_wide_short": ("wide", 4, 262144, 128, 1, 2048),
    "bwd_wide": ("wide", 2, 524288, 128, 1, 4096),
    "bwd_wide_16bit": ("wide", 4, 262144, 128, 1, 2048),
    "bwd_narrow": ("narrow", 1, 150001, 128, 1, 1172),
    # Segments: clamp(135168 / groups, 1, 16); blocks of 32 groups.
    "bwd_segmented_16": ("segmented", 1, 64, 512, 16, 2),
    "bwd_segmented_6": ("segmented", 2, 20000, 192, 6, 625),
    "bwd_segmented_2": ("segmented", 1, 65536, 64, 2, 2048),
    "bwd_segmented_1": ("segmented", 1, 100000, 32, 1, 3125),
    "bwd_narrow_long_odd": ("narrow_long", 1, 37, 32, 1, 2),
    "bwd_narrow_long_unaligned": ("narrow_long", 1, 16384, 32, 1, 512),
    # Per-neuron parameters: the wide plans become narrow (one neuron per thread, the same
    # neurons), the others stay.
    "per_neuron_wide_f32": ("narrow", 1, 1 << 20, 128, 1, 8192),
    "per_neuron_wide_16bit": ("narrow", 1, 1 << 21, 128, 1, 16384),
    "per_neuron_staged_deep_f32": ("staged_deep", 1, 16384, 32, 1, 512),
    "per_neuron_bwd_wide_short": ("narrow", 1, 1 << 20, 128, 1, 8192),
    "per_neuron_bwd_wide_16bit": ("narrow", 1, 1 << 20, 128, 1, 8192),
    "per_neuron_bwd_narrow": ("narrow", 1, 150001, 128, 1, 1172),
    "per_neuron_bwd_segmented_2": ("segmented", 1, 65536, 64, 2, 2048),
}

# name: (neurons per thread, steps per chunk, staged) of the kernel the plan launches; the
# backward's chunk is one checkpoint interval (8 steps, 4 for 16-bit inputs) but in the short
# wide plan.
SHAPES = {
    "wide_f32": (4, 4, 0),
    "wide_16bit": (8, 4, 0),
    "narrow_16bit": (1, 8, 0),
    "wide_f64": (2, 4, 0),
    "narrow_odd": (1, 8, 0),
    "narrow_unaligned": (1, 8, 0),
    "staged_deep_f32": (1, 32, 1),
    "staged_deep_16bit": (2, 32, 1),
    "staged_deep_rows": (2, 32, 1),
    "staged_shallow_64": (1, 8, 1),
    "staged_shallow_128": (1, 8, 1),
    "narrow_a100": (1, 8, 0),
    "narrow_long_odd": (1, 32, 0),
    "narrow_long_unaligned": (1, 32, 0),
    "bwd_wide_short": (4, 4, 0),
    "bwd_wide": (2, 8, 0),
    "bwd_wide_16bit": (4, 4, 0),
    "bwd_narrow": (1, 8, 0),
    "bwd_segmented_16": (1, 8, 1),
    "bwd_segmented_6": (2, 4, 1),
    "bwd_segmented_2": (1, 8, 1),
    "bwd_segmented_1": (1, 8, 1),
    "bwd_narrow_long_odd": (1, 4, 0),
    "bwd_narrow_long_unaligned": (1, 8, 0),
    "per_neuron_wide_f32": (1, 8, 0),
    "per_neuron_wide_16bit": (1, 8, 0),
    "per_neuron_staged_deep_f32": (1, 32, 1),
    "per_neuron_bwd_wide_short": (1, 8, 0),
    "per_neuron_bwd_wide_16bit": (1, 4, 0),
    "per_neuron_bwd_narrow": (1, 8, 0),
    "per_neuron_bwd_segmented_2": (1, 8, 1),
}

# dtype: kWideVec, kBackwardWideVec, kBackwardShortVec, kStagedVec, backward_wide_vec at 4 and
# 5 steps.
VECS = {"16bit": (8, 4, 4, 2, 4, 4), "float32": (4, 2, 4, 1, 4, 2), "float64": (2, 1, 1, 1, 1, 1)}

# Segments (and threads) the shared memory holds, bytes per thread: float32, no grad_v_seq:
# 2 rings of 3 x 8 x 4 bytes + 6 x 4 = 216; with grad_v_seq another 96; 16-bit: 2 x 3 x 4 x 4
# + 6 x 8 = 144. An H100 opts in to 227 KB per block, 48 KB is the default.
FITS = {
    "f32_h100": (16, 512),
    "f32_48k": (7, 224),  # 216 x 32 x 7 <= 49152 < 216 x 32 x 8
    "f32_grad_v_seq_48k": (4, 128),
    "16bit_48k": (10, 320),
}


@pytest.fixture(scope="module")
def output(tmp_path_factory):
    compiler = shutil.which("g++")
    if compiler is None:
        pytest.skip("needs g++")
    folder = tmp_path_factory.mktemp("plan")
    source, binary = folder / "plan.cc", folder / "plan"
    source.write_text(PROGRAM)
    subprocess.run([compiler, "-std=c++20", "-Wall", "-Werror", "-I", str(ROOT / "cuda"),
                    str(source), "-o", str(binary)], check=True, capture_output=True)
    lines = subprocess.run([str(binary)], check=True, capture_output=True,
                           text=True).stdout.splitlines()
    return [line.split() for line in lines]


def _rows(output, kind):
    return {row[1]: row[2:] for row in output if row[0] == kind}


@pytest.mark.parametrize("name", sorted(PLANS))
def test_plan(output, name):
    plan, *numbers = _rows(output, "plan")[name]
    assert (plan, *map(int, numbers)) == PLANS[name]


@pytest.mark.parametrize("name", sorted(SHAPES))
def test_shape(output, name):
    assert tuple(map(int, _rows(output, "shape")[name])) == SHAPES[name]


def test_vecs(output):
    assert {k: tuple(map(int, v)) for k, v in _rows(output, "vecs").items()} == VECS


def test_plans_without_a_kernel_are_not_dispatched(output):
    # The forward has no segmented kernel, the backward no staged one: dispatching them calls
    # nothing and says so (no silent fallback to another plan's kernel).
    rows = _rows(output, "undispatched")
    assert rows == {"fwd_segmented": ["0"], "bwd_staged_deep": ["0"], "bwd_staged_shallow": ["0"]}
    assert ["dispatched"] not in output


def test_fit_segments(output):
    assert {k: tuple(map(int, v)) for k, v in _rows(output, "fit").items()} == FITS


def test_bulk_forward(output):
    # 160 threads: 4 compute warps and the copy warp. Deep: 6 slots of 32 steps x 128 neurons x
    # 4 bytes + 96 bytes of barriers; shallow: 16 steps; 16-bit deep: 64 steps of 2 bytes.
    bulk = next(row for row in output if row[0] == "bulk")
    assert list(map(int, bulk[1:])) == [160, 98400, 49248, 98400]
    # Resident blocks: 132 x min(233472 / (98400 + 1024), 2048 / 160) = 132 x 2; shallow x 4;
    # on 108 multiprocessors of 164 KB, one deep block each.
    assert next(row for row in output if row[:2] == ["resident", "h100"])[2:] == ["264", "528"]
    assert next(row for row in output if row[:2] == ["resident", "a100"])[2:] == ["108"]
