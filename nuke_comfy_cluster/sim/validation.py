"""Prompt validation with ComfyUI 0.3.39's error bodies.

:func:`validate_prompt` follows ``execution.validate_prompt``: unknown class
-> ``invalid_prompt``; no output node -> ``prompt_no_outputs``; otherwise each
output is validated with its ancestors and failures are reported per node
(``required_input_missing``, ``invalid_input_type``, ``value_smaller_than_min``,
``value_bigger_than_max``, ``value_not_in_list``, ``return_type_mismatch``,
``custom_validation_failed``...). Values are converted in place (``"64"`` ->
``64``), as the real server does before queueing the prompt.
"""

from __future__ import annotations

import traceback
from typing import Any, Callable, Dict, List, NamedTuple, Optional, Tuple

from .nodes import Dirs, input_file_exists, is_output_node, return_types

Error = Dict[str, Any]
Verdict = Tuple[bool, List[Error], str]


class ValidationResult(NamedTuple):
    ok: bool
    error: Optional[Error]
    good_outputs: List[str]
    node_errors: Dict[str, Any]


def _error(kind: str, message: str, details: str, extra_info: Optional[Dict[str, Any]] = None) -> Error:
    return {"type": kind, "message": message, "details": details, "extra_info": extra_info or {}}


def _input_info(class_inputs: Dict[str, Any], name: str) -> Tuple[Any, str, Dict[str, Any]]:
    for category in ("required", "optional"):
        spec = class_inputs.get(category, {}).get(name)
        if spec is not None:
            extra = spec[1] if len(spec) > 1 else {}
            return spec[0], category, extra
    return None, "", {}


def _types_match(received: Any, expected: Any) -> bool:
    if isinstance(expected, list):
        # A combo input accepts a link only from another combo output.
        return received == "COMBO" or isinstance(received, list)
    if received == "*" or expected == "*" or received == expected:
        return True
    if isinstance(received, str) and isinstance(expected, str):
        return bool(set(received.split(",")) & set(expected.split(",")))
    return False


def _custom_validators(dirs: Dirs) -> Dict[str, Dict[str, Callable[[Any], Any]]]:
    def image_exists(value: Any) -> Any:
        return True if input_file_exists(value, dirs) else f"Invalid image file: {value}"

    return {"LoadImage": {"image": image_exists}}


class _Validator:
    def __init__(self, prompt: Dict[str, Any], defs: Dict[str, Any], dirs: Dirs) -> None:
        self.prompt = prompt
        self.defs = defs
        self.custom = _custom_validators(dirs)
        self.validated: Dict[str, Verdict] = {}

    def inputs(self, unique_id: str) -> Verdict:
        if unique_id in self.validated:
            return self.validated[unique_id]
        node = self.prompt[unique_id]
        inputs = node["inputs"]
        class_type = node["class_type"]
        class_inputs = self.defs[class_type]["input"]
        custom = self.custom.get(class_type, {})
        order = list(class_inputs.get("required", {})) + list(class_inputs.get("optional", {}))
        errors: List[Error] = []
        valid = True
        for name in order:
            input_type, category, extra = _input_info(class_inputs, name)
            info = [input_type, extra]
            if name not in inputs:
                if category == "required":
                    errors.append(
                        _error("required_input_missing", "Required input is missing", name, {"input_name": name})
                    )
                continue
            value = inputs[name]
            if isinstance(value, list):
                if len(value) != 2:
                    errors.append(
                        _error(
                            "bad_linked_input",
                            "Bad linked input, must be a length-2 list of [node_id, slot_index]",
                            name,
                            {"input_name": name, "input_config": info, "received_value": value},
                        )
                    )
                    continue
                source_id = value[0]
                received = return_types(self.prompt[source_id]["class_type"])[value[1]]
                if not _types_match(received, input_type):
                    errors.append(
                        _error(
                            "return_type_mismatch",
                            "Return type mismatch between linked nodes",
                            f"{name}, received_type({received}) mismatch input_type({input_type})",
                            {"input_name": name, "input_config": info, "received_type": received, "linked_node": value},
                        )
                    )
                    continue
                try:
                    verdict = self.inputs(source_id)
                except Exception as ex:  # noqa: BLE001 - reported to the client, as ComfyUI does
                    valid = False
                    self.validated[source_id] = (
                        False,
                        [
                            _error(
                                "exception_during_inner_validation",
                                "Exception when validating inner node",
                                str(ex),
                                {
                                    "input_name": name,
                                    "input_config": info,
                                    "exception_message": str(ex),
                                    "exception_type": type(ex).__name__,
                                    "traceback": traceback.format_tb(ex.__traceback__),
                                    "linked_node": value,
                                },
                            )
                        ],
                        source_id,
                    )
                    continue
                if verdict[0] is False:
                    valid = False
                continue

            if isinstance(value, dict) and "__value__" in value:
                value = value["__value__"]
                inputs[name] = value
            try:
                if input_type == "INT":
                    value = int(value)
                elif input_type == "FLOAT":
                    value = float(value)
                elif input_type == "STRING":
                    value = str(value)
                elif input_type == "BOOLEAN":
                    value = bool(value)
                inputs[name] = value
            except Exception as ex:  # noqa: BLE001
                errors.append(
                    _error(
                        "invalid_input_type",
                        f"Failed to convert an input value to a {input_type} value",
                        f"{name}, {value}, {ex}",
                        {
                            "input_name": name,
                            "input_config": info,
                            "received_value": value,
                            "exception_message": str(ex),
                        },
                    )
                )
                continue
            if name in custom:
                continue
            if "min" in extra and value < extra["min"]:
                errors.append(
                    _error(
                        "value_smaller_than_min",
                        "Value {} smaller than min of {}".format(value, extra["min"]),
                        name,
                        {"input_name": name, "input_config": info, "received_value": value},
                    )
                )
                continue
            if "max" in extra and value > extra["max"]:
                errors.append(
                    _error(
                        "value_bigger_than_max",
                        "Value {} bigger than max of {}".format(value, extra["max"]),
                        name,
                        {"input_name": name, "input_config": info, "received_value": value},
                    )
                )
                continue
            if isinstance(input_type, list) and value not in input_type:
                config: Any = info
                if len(input_type) > 20:
                    listing = f"(list of length {len(input_type)})"
                    config = None
                else:
                    listing = str(input_type)
                errors.append(
                    _error(
                        "value_not_in_list",
                        "Value not in list",
                        f"{name}: '{value}' not in {listing}",
                        {"input_name": name, "input_config": config, "received_value": value},
                    )
                )
                continue

        for name, check in custom.items():
            if name not in inputs or isinstance(inputs[name], list):
                continue
            verdict = check(inputs[name])
            if verdict is not True:
                details = name if verdict is False else f"{name} - {verdict}"
                errors.append(
                    _error(
                        "custom_validation_failed", "Custom validation failed for node", details, {"input_name": name}
                    )
                )

        result: Verdict = (False, errors, unique_id) if errors or not valid else (True, [], unique_id)
        self.validated[unique_id] = result
        return result


def validate_prompt(prompt: Dict[str, Any], defs: Dict[str, Any], dirs: Dirs) -> ValidationResult:
    """Validate an API-format prompt; raises (-> HTTP 500) only when it is not a JSON object."""
    if not isinstance(prompt, dict):
        raise TypeError(f"prompt must be an object, not {type(prompt).__name__}")
    outputs: List[str] = []
    for node_id, node in prompt.items():
        if not isinstance(node, dict) or "class_type" not in node:
            error = _error(
                "invalid_prompt",
                "Cannot execute because a node is missing the class_type property.",
                f"Node ID '#{node_id}'",
            )
            return ValidationResult(False, error, [], {})
        class_type = node["class_type"]
        if class_type not in defs:
            error = _error(
                "invalid_prompt",
                f"Cannot execute because node {class_type} does not exist.",
                f"Node ID '#{node_id}'",
            )
            return ValidationResult(False, error, [], {})
        if is_output_node(class_type):
            outputs.append(node_id)
    if not outputs:
        return ValidationResult(False, _error("prompt_no_outputs", "Prompt has no outputs", ""), [], {})

    validator = _Validator(prompt, defs, dirs)
    good: List[str] = []
    failed: List[Tuple[str, List[Error]]] = []
    node_errors: Dict[str, Any] = {}
    for output in outputs:
        try:
            ok, reasons, _ = validator.inputs(output)
        except Exception as ex:  # noqa: BLE001 - a broken prompt is the client's error, not ours
            ok = False
            reasons = [
                _error(
                    "exception_during_validation",
                    "Exception when validating node",
                    str(ex),
                    {"exception_type": type(ex).__name__, "traceback": traceback.format_tb(ex.__traceback__)},
                )
            ]
            validator.validated[output] = (False, reasons, output)
        if ok:
            good.append(output)
            continue
        for node_id, (node_ok, node_reasons, _) in validator.validated.items():
            # Nodes that fail only because an ancestor failed carry no errors and are not listed.
            if node_ok is not True and node_reasons:
                if node_id not in node_errors:
                    node_errors[node_id] = {
                        "errors": node_reasons,
                        "dependent_outputs": [],
                        "class_type": prompt[node_id]["class_type"],
                    }
                node_errors[node_id]["dependent_outputs"].append(output)
        failed.append((output, reasons))

    if not good:
        details = "\n".join("{}: {}".format(e["message"], e["details"]) for _, errors in failed for e in errors)
        error = _error("prompt_outputs_failed_validation", "Prompt outputs failed validation", details)
        return ValidationResult(False, error, [], node_errors)
    return ValidationResult(True, None, good, node_errors)
