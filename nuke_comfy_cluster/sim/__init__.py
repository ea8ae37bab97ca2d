"""A ComfyUI-protocol simulator: a real aiohttp HTTP + websocket server for tests, demo and benchmarks.

It reproduces what a real ComfyUI 0.3.39 answers (``shared/comfyui-protocol``
captures): response shapes, status codes, content types, validation error
bodies, websocket message order, queue / history / interrupt semantics, file
uploads and downloads. Prompts "run" for a configurable time and write real
(small, solid-colour) PNG files named like ComfyUI's.

Command line::

    python -m nuke_comfy_cluster.sim --port P [--host 127.0.0.1]
        [--speed S=1.0] [--seconds T=1.0] [--jitter J=0.0] [--seed N]
        [--output-directory D] [--input-directory D] [--temp-directory D]
        [--name NAME] [--device-name "Sim GPU"] [--vram-gb G=24]
        [--cache-none] [--preview-method none|auto] [--exit-with-parent]
        [--without-nodes CLASS[,CLASS]] [--models NAME[,NAME]]
        [--fail-class CLASS] [--load-seconds L]
        [--fail-next N] [--hang S] [--latency S] [--exit-mid-prompt]
        [--malformed-json N] [--malformed-ws N]

``--port 0`` picks a free port. Once listening, the simulator prints exactly
one line, ``SIM READY <port>``, on stdout (logs go to stderr). Directories
default to temp folders removed at exit. SIGTERM / SIGINT stop it cleanly.

Timing: one worker runs prompts in ascending ``number`` (``front: true`` gets
a negative number, as in ComfyUI). A prompt takes ``seconds / speed`` x
uniform(1 - jitter, 1 + jitter), shared among the nodes that actually run by
their weight (``KSampler`` weighs most); ``extra_data.sim_seconds`` in the
``POST /prompt`` body overrides ``seconds`` for that prompt. As in ComfyUI,
resubmitting an identical prompt hits the output cache and finishes at once
(``execution_cached`` lists its nodes); vary an input, or pass
``--cache-none``, to make every prompt take its time. A SIGSTOPped simulator
does not count the frozen time.

Node classes (``GET /object_info`` has their real definitions): EmptyImage,
LoadImage, ImageInvert, ImageBlur, ImageScale, ImageScaleBy, ImageToMask,
MaskToImage, SaveImage, PreviewImage, CheckpointLoaderSimple, CLIPTextEncode,
EmptyLatentImage, KSampler (one ``progress`` message per step), VAEDecode,
VAEEncode, UpscaleModelLoader, ImageUpscaleWithModel (``progress`` per tile).
``ImageToMask`` with ``channel: "alpha"`` fails at run time with the real
``execution_error`` (the captures' runtime-error workflow).

How one server differs from another (heterogeneous clusters, model loads):

=============================  ==============================================================
``--without-nodes C1,C2``      the box lacks these node classes (a missing custom node): absent
                               from ``/object_info``; a prompt using one answers 400
                               ``{"error": {"type": "invalid_prompt", "message": "Cannot execute
                               because node C1 does not exist.", "details": "Node ID '#2'", ...},
                               "node_errors": {}}`` -- ComfyUI 0.3.39's body (later releases say
                               ``missing_node_type``)
``--models A,B``               the checkpoint names ``CheckpointLoaderSimple`` accepts (and
                               ``/models/checkpoints`` lists, sorted); another name answers 400
                               ``value_not_in_list`` exactly as ComfyUI does
``--fail-class C``             a node of class C spends its share of time, then fails with a CUDA
                               out-of-memory ``execution_error`` (``torch.OutOfMemoryError``,
                               "CUDA out of memory. ...")
``--load-seconds L``           a loader (``CheckpointLoaderSimple``, ``UpscaleModelLoader``) that
                               actually runs adds ``L / speed`` seconds; a cached one costs nothing
                               (classic cache: another model's prompt evicts it, see above)
=============================  ==============================================================

Checked against real ComfyUI 0.3.39 by ``tests/real/test_conformance.py``
(``bash scripts/test --real``). Known differences, on purpose or not worth the cost:

- Validation errors of one node: ComfyUI checks a node's inputs in ``set`` order, random per
  server process, so the order of ``node_errors[id]["errors"]`` varies between real servers;
  the simulator lists them in the node's input order. Compare them as sets.
- Pixels: ComfyUI computes in float32 and ``SaveImage`` truncates, so after arithmetic
  (``ImageInvert`` ...) a channel can be 1 lower than the exact value the simulator writes.
- Timing and progress: only ``KSampler`` and ``ImageUpscaleWithModel`` send ``progress``
  (real nodes send it whenever they use a progress bar); ``POST /interrupt`` stops the running
  node at once (real nodes stop at their next check); node time is simulated, never computed.
- ``/system_stats`` reports a CUDA device and has a subset of the real ``system`` keys.
- Only the node classes listed above exist; ``/object_info`` serves their real definitions.

Fault switches -- ``POST /sim/fault`` with a JSON object of any of these
(answers the current state; ``GET /sim/fault`` reads it; ``POST /sim/reset``
clears all); the CLI flags above set the same at start:

==================  ===========================================================
``fail_next``  N    the next N requests (other than ``/sim/*``) answer 500
                    ``text/plain`` (a websocket handshake counts as one)
``hang``       S    requests (other than ``/sim/*``) sleep S seconds first; 0 off
``latency``    S    S seconds added to every response (other than ``/sim/*``)
``drop_websockets`` true: abort every websocket now (clients see 1006), once
``exit_mid_prompt`` true: ``os._exit(1)`` just after the next prompt sends its
                    first ``executing`` (a crash mid-run; queue and history lost)
``malformed_json``  N: the next N JSON responses have a truncated body
``malformed_ws``    N: the next N websocket text messages are truncated garbage
==================  ===========================================================

``GET /sim/info`` reports name, pid, port, speed, directories and the queue.
The admin routes are not mirrored under ``/api/``; every ComfyUI route is.

For tests: :class:`nuke_comfy_cluster.sim.process.SimProcess` starts one
simulator in its own process (kill, SIGSTOP/SIGCONT, restart on the same
port, faults); :func:`~nuke_comfy_cluster.sim.process.start_cluster` starts
several. Importing this package does nothing (and does not import aiohttp).
"""
