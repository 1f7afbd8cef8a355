"""`python -m kbqa.llm.llama_server …`: llama-cpp-python's OpenAI-compatible server, made safe on AMX CPUs.

Takes exactly the arguments of `python -m llama_cpp.server` (it runs that server's own `main`).
The one difference: on CPUs with AMX tiles, llama.cpp's extra weight buffer types are turned off
for the life of the process, as `kbqa.llm.bundled` does for the in-process backend — with them
on, the first decode crashed the server (segmentation fault, connection cut mid-reply) on the
CI machine. Point `llm.backend: openai` at it like at any other OpenAI-compatible server.
"""

from __future__ import annotations

from kbqa.llm.bundled import _cpu_has_amx, _plain_weight_buffers


def main() -> None:
    from llama_cpp.server.__main__ import main as serve

    with _plain_weight_buffers(disable=_cpu_has_amx()):
        serve()


if __name__ == "__main__":
    main()
