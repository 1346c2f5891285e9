"""Parse .msg files with ROS 2's own IDL tool chain (rosidl_adapter + rosidl_parser); print JSON.

Run by test/package/test_msg_idl.py with an interpreter that has Debian's python3-rosidl (usually /usr/bin/python3,
not the project venv). Usage: python3 rosidl_parse_msgs.py PACKAGE MSG_DIR. Last output line:
RESULT {"Name": [[type, field, is_array, array_size_or_null], ...]} from the .msg parser, after a round
trip through the .idl translation and the lark IDL grammar (what rosidl_generate_interfaces runs)."""

import json
import pathlib
import sys
import tempfile

from rosidl_adapter.msg import convert_msg_to_idl
from rosidl_adapter.parser import parse_message_file
from rosidl_parser.definition import IdlLocator, Message
from rosidl_parser.parser import parse_idl_file


def main(package: str, msg_dir: str) -> dict:
    out = {}
    src = pathlib.Path(msg_dir).resolve()
    with tempfile.TemporaryDirectory() as tmp:
        for path in sorted(src.glob("*.msg")):
            spec = parse_message_file(package, str(path))
            fields = [
                [
                    f"{f.type.pkg_name}/{f.type.type}" if f.type.pkg_name else f.type.type,
                    f.name,
                    bool(f.type.is_array),
                    f.type.array_size,
                ]
                for f in spec.fields
            ]
            idl = convert_msg_to_idl(src.parent, package, path.relative_to(src.parent), pathlib.Path(tmp))
            idl_file = parse_idl_file(IdlLocator(pathlib.Path(tmp), idl.relative_to(tmp)))
            (message,) = idl_file.content.get_elements_of_type(Message)
            idl_names = [m.name for m in message.structure.members]
            if idl_names != [f[1] for f in fields]:
                raise SystemExit(f"{path.name}: .idl members {idl_names} differ from the .msg fields")
            out[spec.base_type.type] = fields
    return out


if __name__ == "__main__":
    result = main(sys.argv[1], sys.argv[2])
    print("RESULT " + json.dumps(result))  # the adapter prints progress lines before this one
