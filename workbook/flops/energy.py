"""Energy: joules per training token read from the GPU's own meter, and what a whole run costs.

* **measured** - NVML (``nvidia-ml-py``, imported as ``pynvml``) keeps a counter of the energy
  the GPU has used since the driver loaded (``nvmlDeviceGetTotalEnergyConsumption``, mJ, Volta
  and newer). Read it before and after a timed stretch of training steps: the difference over
  the tokens trained is J/token. Where the counter is missing, the board power
  (``nvmlDeviceGetPowerUsage``, mW) is sampled on a thread and integrated instead
  (:class:`EnergyMeter`). NVML sees the GPU board only: no CPU, memory, network or cooling.
* **predicted** - a whole run: GPU-hours = 6·N·D / (peak FLOP/s × MFU), energy = GPU-hours ×
  power × PUE (the data centre's overhead), CO₂ = energy × the grid's carbon intensity, cost =
  GPU-hours × price (:func:`predict_run_cost`). Each uncertain input is a (low, high) range, and
  so is each output: the interval a claim is judged by.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable
from typing import Any

import pandas as pd

from workbook.config import WorkbookError, check_range

__all__ = ["load_nvml", "EnergyMeter", "predict_run_cost", "V100", "GPT3"]

# GPT-3 as published (Brown et al. 2020) and as its energy was estimated (Patterson et al. 2021,
# "Carbon Emissions and Large Neural Network Training", Table 4): V100s in a Microsoft data
# centre. These are the paper's inputs, the lecture's 1,287 MWh and ~550 t CO2 are its outputs.
GPT3 = {"n_params": 175e9, "n_tokens": 300e9, "energy_mwh": 1287.0, "co2_t": 552.0,
        "compute_usd": 5e6, "pue": 1.1, "kg_co2_per_kwh": 0.429}
# NVIDIA V100 SXM2 datasheet: 125 TFLOP/s fp16 on the tensor cores, 300 W board power.
V100 = {"name": "V100 SXM2", "tflops_fp16": 125.0, "tdp_w": 300.0}


def load_nvml() -> Any | None:
    """The initialised ``pynvml`` module, or None where there is none (no ``nvidia-ml-py``, no
    NVIDIA driver): a CPU run then says "no NVML here" instead of failing."""
    try:
        import pynvml
    except ImportError:
        return None
    try:
        pynvml.nvmlInit()
    except Exception:  # pynvml.NVMLError: no driver, no GPU
        return None
    return pynvml


class EnergyMeter:
    """Joules used by one GPU between :meth:`start` and :meth:`stop`.

    ``nvml``: the ``pynvml`` module (or any object with its functions: the tests pass a fake).
    The energy counter is preferred; where reading it fails, the power is sampled every
    ``sample_s`` seconds on a thread and averaged (``method`` says which was used)."""

    def __init__(self, nvml: Any, index: int = 0, sample_s: float = 0.02,
                 clock: Callable[[], float] = time.perf_counter) -> None:
        check_range("index", index, 0, 63)
        check_range("sample_s", sample_s, 1e-4, 10.0)
        self.nvml, self.sample_s, self.clock = nvml, sample_s, clock
        self.handle = nvml.nvmlDeviceGetHandleByIndex(index)
        try:
            nvml.nvmlDeviceGetTotalEnergyConsumption(self.handle)
            self.method = "energy_counter"
        except Exception:  # NVMLError_NotSupported (pre-Volta, some virtual GPUs)
            self.method = "power_samples"
        self._samples: list[float] = []
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._t0 = self._e0 = math.nan

    def power_w(self) -> float:
        """The board's power draw now, in watts (NVML reports milliwatts)."""
        return self.nvml.nvmlDeviceGetPowerUsage(self.handle) / 1000.0

    def _sample(self) -> None:
        while not self._stop.is_set():
            self._samples.append(self.power_w())
            self._stop.wait(self.sample_s)

    def start(self) -> None:
        self._samples, self._t0 = [], self.clock()
        if self.method == "energy_counter":
            self._e0 = float(self.nvml.nvmlDeviceGetTotalEnergyConsumption(self.handle))
        else:
            self._stop.clear()
            self._thread = threading.Thread(target=self._sample, daemon=True)
            self._thread.start()

    def stop(self) -> dict[str, float | str]:
        """{"joules", "seconds", "watts", "method"} since :meth:`start`."""
        if math.isnan(self._t0):
            raise WorkbookError("EnergyMeter.stop() before start()")
        seconds = self.clock() - self._t0
        if self.method == "energy_counter":
            joules = (float(self.nvml.nvmlDeviceGetTotalEnergyConsumption(self.handle))
                      - self._e0) / 1000.0  # mJ -> J
        else:
            self._stop.set()
            if self._thread is not None:
                self._thread.join()
            samples = self._samples or [self.power_w()]
            joules = sum(samples) / len(samples) * seconds
        self._t0 = math.nan
        watts = joules / seconds if seconds > 0 else math.nan
        return {"joules": joules, "seconds": seconds, "watts": watts, "method": self.method}


def _range(name: str, value: float | tuple[float, float], low: float,
           high: float) -> tuple[float, float]:
    pair = tuple(value) if isinstance(value, (tuple, list)) else (value, value)
    if len(pair) != 2:
        raise WorkbookError(f"{name}={value!r}: give a number or a (low, high) pair")
    for v in pair:
        check_range(name, v, low, high)
    if pair[0] > pair[1]:
        raise WorkbookError(f"{name}={value!r}: low must not exceed high")
    return float(pair[0]), float(pair[1])


def predict_run_cost(n_params: float, n_tokens: float, peak_tflops: float | tuple,
                     mfu: float | tuple, watts: float | tuple, pue: float | tuple,
                     kg_co2_per_kwh: float | tuple, usd_per_gpu_hour: float | tuple
                     ) -> pd.DataFrame:
    """GPU-hours, energy, CO₂ and cost of training ``n_params`` on ``n_tokens`` (6·N·D FLOPs),
    each as low / central / high from the inputs' ranges (a number is a range of one point).
    ``mfu`` is a fraction (0.4), ``watts`` the average board power per GPU while training."""
    check_range("n_params", n_params, 1.0, 1e15)
    check_range("n_tokens", n_tokens, 1.0, 1e17)
    peak = _range("peak_tflops", peak_tflops, 0.01, 1e5)
    util = _range("mfu", mfu, 1e-4, 1.0)
    power = _range("watts", watts, 1.0, 1e5)
    overhead = _range("pue", pue, 1.0, 3.0)
    grid = _range("kg_co2_per_kwh", kg_co2_per_kwh, 0.0, 2.0)
    price = _range("usd_per_gpu_hour", usd_per_gpu_hour, 0.0, 1e3)
    flops = 6.0 * n_params * n_tokens

    def outputs(pk: float, u: float, w: float, p: float, g: float, usd: float) -> list[float]:
        gpu_hours = flops / (pk * 1e12 * u) / 3600.0
        mwh = gpu_hours * w * p / 1e6
        return [flops, gpu_hours, mwh, mwh * g, gpu_hours * usd / 1e6]   # MWh × kg/kWh = t

    mid = [(a + b) / 2 for a, b in (peak, util, power, overhead, grid, price)]
    # every output falls with peak and MFU and rises with the rest: the corners bound it
    low = outputs(peak[1], util[1], power[0], overhead[0], grid[0], price[0])
    high = outputs(peak[0], util[0], power[1], overhead[1], grid[1], price[1])
    names = [("training FLOPs (6·N·D)", "FLOP"), ("GPU-hours", "GPU·h"),
             ("energy (GPU power × PUE)", "MWh"), ("CO₂", "t"), ("compute cost", "M$")]
    return pd.DataFrame({"quantity": [n for n, _ in names], "low": low,
                         "central": outputs(*mid), "high": high,
                         "unit": [u for _, u in names]})
