"""What each simulated node class does when it runs.

Values flowing between nodes are tiny descriptions (an image is its size and one
colour), never pixels; only output nodes touch the disk, writing real PNG files
named the way ComfyUI names them. Each behaviour has a ``weight`` (its share of
the prompt's simulated time) and optionally a number of ``progress`` steps.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import random
import string
import time
from typing import Any, Callable, Dict, List, NamedTuple, Optional, Tuple

from .node_defs import NODE_DEFS
from .png import png_first_pixel, png_size, solid_png

RGB = Tuple[int, int, int]


class Image(NamedTuple):
    width: int
    height: int
    rgb: RGB
    batch: int = 1

    def __str__(self) -> str:
        # ComfyUI formats tensors in error reports; keep the same flavour, short.
        return f"tensor(<image {self.width}x{self.height}x3, batch {self.batch}, rgb={self.rgb}>)"


class Mask(NamedTuple):
    width: int
    height: int
    value: int
    batch: int = 1

    def __str__(self) -> str:
        return f"tensor(<mask {self.width}x{self.height}, batch {self.batch}>)"


class Latent(NamedTuple):
    width: int
    height: int
    batch: int
    rgb: RGB = (128, 128, 128)

    def __str__(self) -> str:
        return f"{{'samples': tensor(<latent {self.width // 8}x{self.height // 8}, batch {self.batch}>)}}"


class Opaque(NamedTuple):
    """A model, CLIP, VAE or conditioning: only its kind and a label matter here."""

    kind: str
    label: str

    def __str__(self) -> str:
        return f"<{self.kind} {self.label}>"


class NodeRuntimeError(Exception):
    """A node failed while executing; becomes an ``execution_error`` message."""

    def __init__(self, exception_type: str, message: str, traceback: Optional[List[str]] = None) -> None:
        super().__init__(message)
        self.exception_type = exception_type
        self.exception_message = message
        self.traceback = traceback or []


class Dirs(NamedTuple):
    output: str
    input: str
    temp: str


class RunContext(NamedTuple):
    """What a running node may use besides its inputs."""

    dirs: Dirs
    prompt: Dict[str, Any]
    extra_data: Dict[str, Any]
    rng: random.Random


NodeResult = Tuple[Tuple[Any, ...], Optional[Dict[str, Any]]]


class Behaviour(NamedTuple):
    run: Callable[[RunContext, Dict[str, Any]], NodeResult]
    weight: float = 1.0
    progress: Optional[Callable[[Dict[str, Any]], int]] = None


def _colour(value: int) -> RGB:
    value = int(value)
    return (value >> 16) & 0xFF, (value >> 8) & 0xFF, value & 0xFF


def _seed_colour(seed: Any) -> RGB:
    digest = hashlib.sha1(str(seed).encode()).digest()
    return digest[0], digest[1], digest[2]


# ---- file names, as ComfyUI's folder_paths does them -----------------------------------------


def annotated_filepath(name: str, dirs: Dirs) -> Tuple[str, Optional[str]]:
    # As folder_paths.annotated_filepath: the marker and the character before it are cut
    # ("x.png [output]" -> "x.png"; "x.png[output]" -> "x.pn", as on a real server).
    for marker, base in (("[output]", dirs.output), ("[input]", dirs.input), ("[temp]", dirs.temp)):
        if name.endswith(marker):
            return name[: -len(marker) - 1], base
    return name, None


def input_path(name: str, dirs: Dirs) -> Optional[str]:
    """Where an input name (maybe ``"sub/x.png [output]"``) points, as ``get_annotated_filepath``.

    Like ComfyUI, an absolute path is taken as it is and ``..`` is not refused: LoadImage reads
    any file the server can (a client on a shared drive sends absolute paths)."""
    name, base = annotated_filepath(name, dirs)
    return os.path.join(base or dirs.input, name)


def input_file_exists(name: Any, dirs: Dirs) -> bool:
    path = input_path(str(name), dirs)
    return path is not None and os.path.exists(path)


def _compute_vars(prefix: str, width: int, height: int) -> str:
    now = time.localtime()
    values = {
        "%width%": str(width),
        "%height%": str(height),
        "%year%": str(now.tm_year),
        "%month%": str(now.tm_mon).zfill(2),
        "%day%": str(now.tm_mday).zfill(2),
        "%hour%": str(now.tm_hour).zfill(2),
        "%minute%": str(now.tm_min).zfill(2),
        "%second%": str(now.tm_sec).zfill(2),
    }
    for key, value in values.items():
        prefix = prefix.replace(key, value)
    return prefix


def save_image_path(prefix: str, output_dir: str, width: int = 0, height: int = 0) -> Tuple[str, str, int, str]:
    """(folder, file stem, first counter, subfolder) like ``folder_paths.get_save_image_path``."""
    if "%" in prefix:
        prefix = _compute_vars(prefix, width, height)
    output_dir = os.path.abspath(output_dir)
    subfolder = os.path.dirname(os.path.normpath(prefix))
    stem = os.path.basename(os.path.normpath(prefix))
    folder = os.path.join(output_dir, subfolder)
    if os.path.commonpath((output_dir, os.path.abspath(folder))) != output_dir:
        raise NodeRuntimeError(
            "Exception",
            "**** ERROR: Saving image outside the output folder is not allowed."
            f"\n full_output_folder: {os.path.abspath(folder)}\n         output_dir: {output_dir}\n         commonpath: {os.path.commonpath((output_dir, os.path.abspath(folder)))}",
        )
    counter = 1
    try:
        names = os.listdir(folder)
    except FileNotFoundError:
        os.makedirs(folder, exist_ok=True)
        names = []
    for name in names:
        # "<stem>_<digits>_..." : the counter continues after the highest one on disk.
        if len(name) <= len(stem) + 1 or os.path.normcase(name[: len(stem)]) != os.path.normcase(stem):
            continue
        if name[len(stem)] != "_":
            continue
        digits = name[len(stem) + 1 :].split("_")[0]
        if digits.isdigit():
            counter = max(counter, int(digits) + 1)
    return folder, stem, counter, subfolder


def _write_images(
    ctx: RunContext, images: Image, prefix: str, folder_type: str, compress_text: bool = True
) -> Dict[str, Any]:
    base = ctx.dirs.output if folder_type == "output" else ctx.dirs.temp
    folder, stem, counter, subfolder = save_image_path(prefix, base, images.width, images.height)
    text = {"prompt": json.dumps(ctx.prompt)} if compress_text else None
    extra = ctx.extra_data.get("extra_pnginfo") if isinstance(ctx.extra_data, dict) else None
    if text is not None and isinstance(extra, dict):
        # like ComfyUI's SaveImage: every extra_pnginfo key becomes a text chunk of its own
        text.update({str(k): json.dumps(v) for k, v in extra.items()})
    data = solid_png(images.width, images.height, images.rgb, text)
    results = []
    for batch_number in range(max(1, images.batch)):
        name = f"{stem.replace('%batch_num%', str(batch_number))}_{counter:05d}_.png"
        tmp = os.path.join(folder, "." + name + ".part")
        with open(tmp, "wb") as handle:
            handle.write(data)
        # Readers polling the folder never see a half-written PNG.
        os.replace(tmp, os.path.join(folder, name))
        results.append({"filename": name, "subfolder": subfolder, "type": folder_type})
        counter += 1
    return {"images": results}


# ---- behaviours ---------------------------------------------------------------------------------


def _empty_image(ctx: RunContext, i: Dict[str, Any]) -> NodeResult:
    return (Image(i["width"], i["height"], _colour(i.get("color", 0)), i["batch_size"]),), None


def _load_image(ctx: RunContext, i: Dict[str, Any]) -> NodeResult:
    path = input_path(str(i["image"]), ctx.dirs)
    if path is None or not os.path.isfile(path):
        raise NodeRuntimeError("FileNotFoundError", "[Errno 2] No such file or directory: %r" % (path or i["image"]))
    with open(path, "rb") as handle:
        data = handle.read()
    width, height = png_size(data) or (512, 512)
    rgb = png_first_pixel(data) or (128, 128, 128)
    return (Image(width, height, rgb), Mask(width, height, 0)), None


def _invert(ctx: RunContext, i: Dict[str, Any]) -> NodeResult:
    image: Image = i["image"]
    return (image._replace(rgb=tuple(255 - c for c in image.rgb)),), None


def _passthrough(ctx: RunContext, i: Dict[str, Any]) -> NodeResult:
    return (i["image"],), None


def _scale(ctx: RunContext, i: Dict[str, Any]) -> NodeResult:
    image: Image = i["image"]
    width, height = int(i["width"]), int(i["height"])
    if width == 0 and height == 0:
        width, height = image.width, image.height
    elif width == 0:
        width = max(1, round(image.width * height / image.height))
    elif height == 0:
        height = max(1, round(image.height * width / image.width))
    return (image._replace(width=width, height=height),), None


def _scale_by(ctx: RunContext, i: Dict[str, Any]) -> NodeResult:
    image: Image = i["image"]
    scale = float(i["scale_by"])
    return (image._replace(width=max(1, round(image.width * scale)), height=max(1, round(image.height * scale))),), None


_IMAGE_TO_MASK_TRACEBACK = [
    '  File "/opt/comfyui/execution.py", line 349, in execute\n'
    "    output_data, output_ui, has_subgraph = get_output_data(obj, input_data_all, "
    "execution_block_cb=execution_block_cb, pre_execute_cb=pre_execute_cb)\n",
    '  File "/opt/comfyui/execution.py", line 224, in get_output_data\n'
    "    return_values = _map_node_over_list(obj, input_data_all, obj.FUNCTION, allow_interrupt=True, "
    "execution_block_cb=execution_block_cb, pre_execute_cb=pre_execute_cb)\n",
    '  File "/opt/comfyui/execution.py", line 196, in _map_node_over_list\n    process_inputs(input_dict, i)\n',
    '  File "/opt/comfyui/execution.py", line 185, in process_inputs\n'
    "    results.append(getattr(obj, func)(**inputs))\n",
    '  File "/opt/comfyui/comfy_extras/nodes_mask.py", line 134, in image_to_mask\n'
    "    mask = image[:, :, :, channels.index(channel)]\n",
]


def _image_to_mask(ctx: RunContext, i: Dict[str, Any]) -> NodeResult:
    image: Image = i["image"]
    channels = ["red", "green", "blue", "alpha"]
    index = channels.index(i["channel"])
    if index >= 3:
        # ComfyUI images carry no alpha channel: the real node fails exactly like this.
        raise NodeRuntimeError(
            "IndexError", "index 3 is out of bounds for dimension 3 with size 3", list(_IMAGE_TO_MASK_TRACEBACK)
        )
    return (Mask(image.width, image.height, image.rgb[index], image.batch),), None


def _mask_to_image(ctx: RunContext, i: Dict[str, Any]) -> NodeResult:
    mask: Mask = i["mask"]
    return (Image(mask.width, mask.height, (mask.value,) * 3, mask.batch),), None


def _save_image(ctx: RunContext, i: Dict[str, Any]) -> NodeResult:
    return (), _write_images(ctx, i["images"], str(i.get("filename_prefix", "ComfyUI")), "output")


def _preview_image(ctx: RunContext, i: Dict[str, Any]) -> NodeResult:
    suffix = "".join(ctx.rng.choice(string.ascii_lowercase) for _ in range(5))
    return (), _write_images(ctx, i["images"], "ComfyUI_temp_" + suffix, "temp", compress_text=False)


def _checkpoint(ctx: RunContext, i: Dict[str, Any]) -> NodeResult:
    name = str(i["ckpt_name"])
    return (Opaque("MODEL", name), Opaque("CLIP", name), Opaque("VAE", name)), None


def _clip_encode(ctx: RunContext, i: Dict[str, Any]) -> NodeResult:
    return (Opaque("CONDITIONING", str(i["text"])[:40]),), None


def _empty_latent(ctx: RunContext, i: Dict[str, Any]) -> NodeResult:
    return (Latent(i["width"], i["height"], i["batch_size"]),), None


def _ksampler(ctx: RunContext, i: Dict[str, Any]) -> NodeResult:
    latent: Latent = i["latent_image"]
    return (latent._replace(rgb=_seed_colour(i["seed"])),), None


def _vae_decode(ctx: RunContext, i: Dict[str, Any]) -> NodeResult:
    latent: Latent = i["samples"]
    return (Image(latent.width, latent.height, latent.rgb, latent.batch),), None


def _vae_encode(ctx: RunContext, i: Dict[str, Any]) -> NodeResult:
    image: Image = i["pixels"]
    return (Latent(image.width, image.height, image.batch, image.rgb),), None


def _upscale_loader(ctx: RunContext, i: Dict[str, Any]) -> NodeResult:
    return (Opaque("UPSCALE_MODEL", str(i["model_name"])),), None


def _tiles(i: Dict[str, Any]) -> int:
    # ComfyUI's tiled upscale reports one step per 512 px tile with 32 px overlap.
    image: Image = i["image"]
    return max(1, math.ceil(image.width / 480.0) * math.ceil(image.height / 480.0))


BEHAVIOURS: Dict[str, Behaviour] = {
    "EmptyImage": Behaviour(_empty_image, 0.2),
    "LoadImage": Behaviour(_load_image, 0.2),
    "ImageInvert": Behaviour(_invert, 0.5),
    "ImageBlur": Behaviour(_passthrough, 2.0),
    "ImageScale": Behaviour(_scale, 0.5),
    "ImageScaleBy": Behaviour(_scale_by, 0.5),
    "ImageToMask": Behaviour(_image_to_mask, 0.2),
    "MaskToImage": Behaviour(_mask_to_image, 0.2),
    "SaveImage": Behaviour(_save_image, 0.3),
    "PreviewImage": Behaviour(_preview_image, 0.3),
    "CheckpointLoaderSimple": Behaviour(_checkpoint, 0.5),
    "CLIPTextEncode": Behaviour(_clip_encode, 0.2),
    "EmptyLatentImage": Behaviour(_empty_latent, 0.1),
    "KSampler": Behaviour(_ksampler, 8.0, lambda i: int(i["steps"])),
    "VAEDecode": Behaviour(_vae_decode, 1.0),
    "VAEEncode": Behaviour(_vae_encode, 1.0),
    "UpscaleModelLoader": Behaviour(_upscale_loader, 0.2),
    "ImageUpscaleWithModel": Behaviour(_passthrough, 3.0, _tiles),
}

assert set(BEHAVIOURS) == set(NODE_DEFS), "every served node class must be runnable"


def is_output_node(class_type: str) -> bool:
    return bool(NODE_DEFS[class_type].get("output_node"))


def return_types(class_type: str) -> List[str]:
    return list(NODE_DEFS[class_type]["output"])


def file_fingerprint(path: Optional[str]) -> str:
    """What LoadImage's IS_CHANGED hashes: a changed input file defeats the cache."""
    if path is None or not os.path.isfile(path):
        return "missing"
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        digest.update(handle.read())
    return digest.hexdigest()
