"""Build steps pyproject.toml cannot express: libemcoder (cargo, through setuptools-rust) into
the package, the default model bundled next to it, and a py3-none-<platform> wheel tag.

scripts/release.sh builds libemcoder once per target and packs that very file into the wheel
and the tarball: with EMCODER_PREBUILT_LIB=/path/to/libemcoder.so, no cargo runs and that file
becomes emcoder/_libemcoder.so; EMCODER_WHEEL_PLAT (e.g. linux_aarch64) then names the platform
of a cross-built library. auditwheel gives the wheel its manylinux tag afterwards."""

import os
import shutil
from pathlib import Path

from setuptools import Distribution, setup
from setuptools.command.build_py import build_py
from setuptools_rust import Binding, RustExtension, Strip

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]  # the checkout: bindings/python -> .
MODEL = ROOT / "models" / "emcoder-mini"
# What a model folder needs (models/emcoder-mini/README.md says what the model is).
MODEL_FILES = ("config.json", "model.safetensors", "thresholds.json", "tokenizer.json", "README.md")
PREBUILT = os.environ.get("EMCODER_PREBUILT_LIB")
PLAT = os.environ.get("EMCODER_WHEEL_PLAT")


class BuildPyWithModel(build_py):
    """Copies the default model into the built package: emcoder/models/emcoder-mini."""

    def run(self):
        super().run()
        if not (MODEL / "model.safetensors").is_file():
            raise SystemExit(f"{MODEL} is missing: build the wheel from an emcoder checkout")
        dest = Path(self.build_lib) / "emcoder" / "models" / "emcoder-mini"
        dest.mkdir(parents=True, exist_ok=True)
        for name in MODEL_FILES:
            shutil.copyfile(MODEL / name, dest / name)
        if PREBUILT:
            if not Path(PREBUILT).is_file():
                raise SystemExit(f"EMCODER_PREBUILT_LIB={PREBUILT} is not a file")
            shutil.copyfile(PREBUILT, Path(self.build_lib) / "emcoder" / "_libemcoder.so")


class PrebuiltDistribution(Distribution):
    """With EMCODER_PREBUILT_LIB the package has no extension to build, but the library makes it
    platform-specific: its files go to the wheel's platlib root, as auditwheel requires."""

    def has_ext_modules(self):
        return True


cmdclass = {"build_py": BuildPyWithModel}
try:
    from wheel.bdist_wheel import bdist_wheel

    class PlatformWheel(bdist_wheel):
        """The library is loaded with ctypes: any Python 3 on this platform can use it."""

        def finalize_options(self):
            super().finalize_options()
            self.root_is_pure = False

        def get_tag(self):
            _, _, plat = super().get_tag()
            return "py3", "none", PLAT or plat

    cmdclass["bdist_wheel"] = PlatformWheel
except ImportError:  # building without wheel (setup.py install): no tag to set
    pass

setup(
    rust_extensions=[] if PREBUILT else [
        RustExtension(
            "emcoder._libemcoder",
            path=str(ROOT / "ffi" / "Cargo.toml"),
            binding=Binding.NoBinding,
            args=["--locked"],
            py_limited_api=False,
            # The release profile keeps line tables for profiling (debug = 1): 42 MB of .so
            # without the strip, 6 MB with it; the exported C symbols stay.
            strip=Strip.Debug,
        )
    ],
    cmdclass=cmdclass,
    distclass=PrebuiltDistribution if PREBUILT else Distribution,
)
