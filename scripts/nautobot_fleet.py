#!/usr/bin/env python3
"""A switch fleet in a Nautobot 3.x, made and changed through Nautobot's own REST API (never its ORM).

Run by scripts/nautobot (`load DIR ...`, `fleet DIR COMMAND ...`) with the Nautobot venv's python; the
standard library only, so any python 3.9+ can run or import it. The URL and token come from --env FILE
(the DIR/env that `scripts/nautobot start DIR` writes) or from NAUTOBOT_URL / NAUTOBOT_TOKEN.

  load [--devices N] [--images M] [--seed S] [--locations L] [--image-base-url URL]
       [--image-sha256 FILE=HEX]... [--image-size FILE=BYTES]... [--image-spec JSON] [--batch B] [--workers W]
      Creates (or finds, by name: a second load adds only what is missing) a location type "ZTP Site"
      and L locations "ztp-site-1".., manufacturers NVIDIA and Edgecore, one device type per platform,
      the platforms of PLATFORMS (name, network_driver), roles leaf and spine (content type dcim.device),
      a text custom field `ztp_profile` on devices, a config context "ztp-leaf" for role leaf, M software
      versions (platform, version, status Active; round-robin over the platforms) each with one software
      image file (image_file_name, image_file_checksum, hashing_algorithm sha256, image_file_size,
      download_url = URL/FILE, default http://127.0.0.1:99/FILE, status Active), then N devices
      sw-00001.. (serial SN00001.., status Active, role spine for every 10th else leaf, platform and
      device type round-robin, software_version a version of the device's platform picked with --seed,
      custom field ztp_profile) each with a management interface eth0 (mgmt_only, 1000base-t) whose
      mac_address is 02:5a:00:XX:XX:XX from the device number (Nautobot answers it upper-case). Bulk POSTs (a JSON list) of B objects,
      W at a time. Checksums and sizes are made up unless given: --image-sha256 / --image-size set them
      per file name; --image-spec JSON lists the images instead: [{"platform": "sonic", "version":
      "4.0.0", "file": "x.bin", "sha256": "...", "size": 123, "url": "http://..."}, ...] ("url" optional).
      Prints the time taken and counts to stderr and a summary JSON on stdout's last line.
  get NAME                      the device as JSON (depth 1)
  set-serial NAME SERIAL        device's serial
  duplicate-serial NAME OTHER   NAME gets OTHER's serial
  set-mac NAME MAC              mac_address of NAME's management interface
  set-role NAME ROLE            role (by name; created for dcim.device if missing)
  set-software NAME VERSION     software_version (by version string, on the device's platform; "none" clears)
  set-image FILE [--sha256 HEX] [--size BYTES] [--url URL]   an image file's checksum/size/download_url
  delete NAME                   delete the device (and its interfaces)
  counts                        how many devices, interfaces, software versions, image files

Importable: `Nautobot.from_env(path)`, `load_fleet(nb, ...)`, `set_software(nb, name, version)`, ...
"""

import argparse
import concurrent.futures
import hashlib
import json
import os
import random
import sys
import time
import urllib.error
import urllib.parse
import urllib.request

# name, network_driver, manufacturer, model (device type), image file name pattern, major version
PLATFORMS = [
    {"name": "nvidia-cumulus", "network_driver": "cumulus_linux", "manufacturer": "NVIDIA", "model": "SN2410",
     "image": "cumulus-linux-{version}-mlx-amd64.bin", "major": 5},
    {"name": "sonic", "network_driver": "sonic", "manufacturer": "Edgecore", "model": "AS7326-56X",
     "image": "sonic-broadcom-{version}.bin", "major": 4},
    {"name": "nvidia-nvos", "network_driver": "nvidia_nvos", "manufacturer": "NVIDIA", "model": "SN4600C",
     "image": "nvos-amd64-{version}.bin", "major": 25},
    {"name": "onie", "network_driver": "onie", "manufacturer": "Edgecore", "model": "AS5812-54X",
     "image": "onie-installer-x86_64-{version}.bin", "major": 2024},
]
ROLES = ["leaf", "spine"]
LOCATION_TYPE = "ZTP Site"
MGMT_INTERFACE = "eth0"
CUSTOM_FIELD = "ztp_profile"
# Nothing listens there. (Not :9: Nautobot's URL validator wants a port of 2 to 5 digits.)
DEFAULT_IMAGE_BASE_URL = "http://127.0.0.1:99"


def log(msg):
    print(f"nautobot_fleet: {msg}", file=sys.stderr, flush=True)


class NautobotError(Exception):
    def __init__(self, method, url, status, body):
        super().__init__(f"{method} {url}: HTTP {status}: {body[:2000]}")
        self.status = status
        self.body = body


class Nautobot:
    """A small REST client: token auth, JSON in and out, paging by the `next` links."""

    def __init__(self, url, token, timeout=600):
        self.url = url.rstrip("/")
        self.token = token
        self.timeout = timeout

    @classmethod
    def from_env(cls, env_file=None):
        env = dict(os.environ)
        if env_file:
            with open(env_file) as f:
                for line in f:
                    line = line.strip()
                    if line and not line.startswith("#") and "=" in line:
                        k, v = line.split("=", 1)
                        env[k] = v
        if not env.get("NAUTOBOT_URL") or not env.get("NAUTOBOT_TOKEN"):
            raise SystemExit("nautobot_fleet: NAUTOBOT_URL and NAUTOBOT_TOKEN are needed (--env DIR/env)")
        return cls(env["NAUTOBOT_URL"], env["NAUTOBOT_TOKEN"])

    def request(self, method, path, body=None, params=None):
        url = path if path.startswith("http") else self.url + path
        if params:
            url += ("&" if "?" in url else "?") + urllib.parse.urlencode(params, doseq=True)
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(url, data=data, method=method, headers={
            "Authorization": f"Token {self.token}",
            "Accept": "application/json",
            "Content-Type": "application/json",
        })
        try:
            with urllib.request.urlopen(req, timeout=self.timeout) as r:
                raw = r.read()
        except urllib.error.HTTPError as e:
            raise NautobotError(method, url, e.code, e.read().decode(errors="replace")) from None
        return json.loads(raw) if raw else None

    def get(self, path, **params):
        return self.request("GET", path, params=params)

    def post(self, path, body):
        return self.request("POST", path, body)

    def patch(self, path, body):
        return self.request("PATCH", path, body)

    def delete(self, path):
        return self.request("DELETE", path)

    def list_all(self, path, limit=1000, **params):
        """Every object of a list endpoint, following `next`."""
        out = []
        page = self.get(path, limit=limit, **params)
        while True:
            out.extend(page["results"])
            if not page.get("next"):
                return out
            page = self.get(page["next"])

    def count(self, path, **params):
        return self.get(path, limit=1, **params)["count"]

    def find(self, path, **filters):
        """The one object matching filters, or None."""
        results = self.get(path, limit=2, **filters)["results"]
        if len(results) > 1:
            raise SystemExit(f"nautobot_fleet: more than one {path} matches {filters}")
        return results[0] if results else None

    def get_or_create(self, path, lookup, body):
        found = self.find(path, **lookup)
        if found:
            return found
        return self.post(path, body)

    def bulk_create(self, path, items, batch=200, workers=2):
        """POST items as JSON lists of `batch`, `workers` requests at a time; the created objects, in order."""
        chunks = [items[i:i + batch] for i in range(0, len(items), batch)]
        if not chunks:
            return []
        with concurrent.futures.ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
            results = list(pool.map(lambda chunk: self.post(path, chunk), chunks))
        return [obj for chunk in results for obj in chunk]

    def bulk_update(self, path, items, batch=200, workers=2):
        """PATCH lists of {"id": ..., field: value}."""
        chunks = [items[i:i + batch] for i in range(0, len(items), batch)]
        with concurrent.futures.ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
            list(pool.map(lambda chunk: self.patch(path, chunk), chunks))


# ---------------------------------------------------------------------------------------- the fleet --

def device_name(i):
    return f"sw-{i:05d}"


def device_serial(i):
    return f"SN{i:05d}"


def device_mac(i):
    return f"02:5a:00:{(i >> 16) & 255:02x}:{(i >> 8) & 255:02x}:{i & 255:02x}"


def image_plan(images, base_url, sha256s, sizes, spec=None):
    """The software versions and image files to have: a list of dicts platform/version/file/sha256/size/url."""
    if spec is not None:
        plan = []
        for entry in spec:
            plan.append({
                "platform": entry["platform"],
                "version": entry["version"],
                "file": entry["file"],
                "sha256": entry.get("sha256") or hashlib.sha256(entry["file"].encode()).hexdigest(),
                "size": entry.get("size"),
                "url": entry.get("url") or f"{base_url}/{entry['file']}",
            })
        return plan
    plan = []
    for k in range(images):
        p = PLATFORMS[k % len(PLATFORMS)]
        version = f"{p['major']}.{k // len(PLATFORMS)}.0"
        name = p["image"].format(version=version)
        plan.append({
            "platform": p["name"],
            "version": version,
            "file": name,
            "sha256": sha256s.get(name) or hashlib.sha256(name.encode()).hexdigest(),
            "size": sizes.get(name, 100_000_000 + k),
            "url": f"{base_url}/{name}",
        })
    return plan


def ensure_taxonomy(nb, locations=1):
    """Location type, locations, manufacturers, device types, platforms, roles, custom field: name -> id maps."""
    ids = {"location": [], "manufacturer": {}, "device_type": {}, "platform": {}, "role": {}}
    active = nb.find("/api/extras/statuses/", name="Active")
    if not active:
        raise SystemExit("nautobot_fleet: no status 'Active'")
    ids["status"] = active["id"]
    lt = nb.get_or_create("/api/dcim/location-types/", {"name": LOCATION_TYPE},
                          {"name": LOCATION_TYPE, "content_types": ["dcim.device"], "nestable": False})
    for n in range(1, locations + 1):
        name = f"ztp-site-{n}"
        loc = nb.get_or_create("/api/dcim/locations/", {"name": name},
                               {"name": name, "location_type": lt["id"], "status": ids["status"]})
        ids["location"].append(loc["id"])
    for p in PLATFORMS:
        m = p["manufacturer"]
        if m not in ids["manufacturer"]:
            ids["manufacturer"][m] = nb.get_or_create("/api/dcim/manufacturers/", {"name": m}, {"name": m})["id"]
        mid = ids["manufacturer"][m]
        ids["device_type"][p["name"]] = nb.get_or_create(
            "/api/dcim/device-types/", {"model": p["model"], "manufacturer": mid},
            {"model": p["model"], "manufacturer": mid, "u_height": 1})["id"]
        ids["platform"][p["name"]] = nb.get_or_create(
            "/api/dcim/platforms/", {"name": p["name"]},
            {"name": p["name"], "network_driver": p["network_driver"], "manufacturer": mid})["id"]
    for r in ROLES:
        ids["role"][r] = ensure_role(nb, r)
    nb.get_or_create("/api/extras/custom-fields/", {"label": "ZTP profile"},  # no filter on key
                     {"key": CUSTOM_FIELD, "label": "ZTP profile", "type": "text", "content_types": ["dcim.device"]})
    nb.get_or_create("/api/extras/config-contexts/", {"name": "ztp-leaf"},
                     {"name": "ztp-leaf", "weight": 1000, "roles": [ids["role"]["leaf"]],
                      "data": {"ztp": {"ntp_servers": ["127.0.0.1"], "role": "leaf"}}})
    return ids


def ensure_role(nb, name):
    return nb.get_or_create("/api/extras/roles/", {"name": name},
                            {"name": name, "content_types": ["dcim.device"]})["id"]


def ensure_images(nb, ids, plan, batch=200, workers=2):
    """Software versions and image files of plan; returns {(platform, version): software_version id}."""
    existing_sv = {(sv["platform"]["id"], sv["version"]): sv["id"]
                   for sv in nb.list_all("/api/dcim/software-versions/")}
    want_sv = []
    for item in plan:
        key = (ids["platform"][item["platform"]], item["version"])
        if key not in existing_sv and key not in [(s["platform"], s["version"]) for s in want_sv]:
            want_sv.append({"platform": key[0], "version": item["version"], "status": ids["status"]})
    for sv in nb.bulk_create("/api/dcim/software-versions/", want_sv, batch, workers):
        existing_sv[(sv["platform"]["id"], sv["version"])] = sv["id"]
    existing_files = {(f["software_version"]["id"], f["image_file_name"])
                      for f in nb.list_all("/api/dcim/software-image-files/")}
    want_files = []
    for item in plan:
        sv = existing_sv[(ids["platform"][item["platform"]], item["version"])]
        if (sv, item["file"]) in existing_files:
            continue
        body = {"software_version": sv, "image_file_name": item["file"], "image_file_checksum": item["sha256"],
                "hashing_algorithm": "sha256", "download_url": item["url"], "status": ids["status"],
                "default_image": True}
        if item.get("size") is not None:
            body["image_file_size"] = item["size"]
        want_files.append(body)
    nb.bulk_create("/api/dcim/software-image-files/", want_files, batch, workers)
    by_platform = {}
    for item in plan:
        by_platform.setdefault(item["platform"], []).append(
            existing_sv[(ids["platform"][item["platform"]], item["version"])])
    return by_platform, len(want_sv), len(want_files)


def load_fleet(nb, devices=50, images=5, seed=1, locations=1, image_base_url=DEFAULT_IMAGE_BASE_URL,
               image_sha256=None, image_size=None, image_spec=None, batch=200, workers=2):
    t0 = time.monotonic()
    ids = ensure_taxonomy(nb, locations)
    t_tax = time.monotonic()
    plan = image_plan(images, image_base_url.rstrip("/"), image_sha256 or {}, image_size or {}, image_spec)
    versions, new_sv, new_files = ensure_images(nb, ids, plan, batch, workers)
    t_img = time.monotonic()
    log(f"taxonomy {t_tax - t0:.1f}s; {new_sv} software versions and {new_files} image files in {t_img - t_tax:.1f}s")

    existing = set()
    if nb.count("/api/dcim/devices/"):
        existing = {d["name"] for d in nb.list_all("/api/dcim/devices/", exclude_m2m="true")}
    rng = random.Random(seed)
    want = []
    macs = {}
    for i in range(1, devices + 1):
        p = PLATFORMS[(i - 1) % len(PLATFORMS)]
        choices = versions.get(p["name"], [])
        sv = rng.choice(choices) if choices else None  # drawn even for existing devices: same picks each load
        name = device_name(i)
        if name in existing:
            continue
        role = "spine" if i % 10 == 0 else "leaf"
        want.append({
            "name": name, "serial": device_serial(i), "status": ids["status"], "role": ids["role"][role],
            "device_type": ids["device_type"][p["name"]], "platform": ids["platform"][p["name"]],
            "location": ids["location"][(i - 1) % len(ids["location"])], "software_version": sv,
            "custom_fields": {CUSTOM_FIELD: "default"},
        })
        macs[name] = device_mac(i)
    created = nb.bulk_create("/api/dcim/devices/", want, batch, workers)
    t_dev = time.monotonic()
    log(f"{len(created)} devices in {t_dev - t_img:.1f}s ({len(existing)} already there)")
    interfaces = [{"device": d["id"], "name": MGMT_INTERFACE, "type": "1000base-t", "mgmt_only": True,
                   "mac_address": macs[d["name"]], "status": ids["status"]} for d in created]
    nb.bulk_create("/api/dcim/interfaces/", interfaces, batch, workers)
    t_if = time.monotonic()
    log(f"{len(interfaces)} interfaces in {t_if - t_dev:.1f}s; total {t_if - t0:.1f}s")
    return {
        "devices": nb.count("/api/dcim/devices/"),
        "devices_created": len(created),
        "interfaces_created": len(interfaces),
        "software_versions": nb.count("/api/dcim/software-versions/"),
        "software_image_files": nb.count("/api/dcim/software-image-files/"),
        "platforms": len(PLATFORMS),
        "locations": len(ids["location"]),
        "seconds": round(t_if - t0, 1),
        "seconds_devices": round(t_dev - t_img, 1),
        "seconds_interfaces": round(t_if - t_dev, 1),
    }


# ------------------------------------------------------------------------------ single-device edits --

def find_device(nb, name):
    dev = nb.find("/api/dcim/devices/", name=name)
    if not dev:
        raise SystemExit(f"nautobot_fleet: no device {name!r}")
    return dev


def set_serial(nb, name, serial):
    return nb.patch(f"/api/dcim/devices/{find_device(nb, name)['id']}/", {"serial": serial})


def duplicate_serial(nb, name, other):
    return set_serial(nb, name, find_device(nb, other)["serial"])


def set_mac(nb, name, mac):
    dev = find_device(nb, name)
    intf = nb.find("/api/dcim/interfaces/", device_id=dev["id"], name=MGMT_INTERFACE)
    if not intf:
        raise SystemExit(f"nautobot_fleet: device {name!r} has no interface {MGMT_INTERFACE}")
    # An empty MAC clears it (the device then has none).
    return nb.patch(f"/api/dcim/interfaces/{intf['id']}/", {"mac_address": mac or None})


def set_role(nb, name, role):
    return nb.patch(f"/api/dcim/devices/{find_device(nb, name)['id']}/", {"role": ensure_role(nb, role)})


def set_software(nb, name, version):
    dev = find_device(nb, name)
    sv_id = None
    if version.lower() != "none":
        if not dev.get("platform"):
            raise SystemExit(f"nautobot_fleet: device {name!r} has no platform")
        sv = nb.find("/api/dcim/software-versions/", version=version, platform=dev["platform"]["id"])
        if not sv:
            raise SystemExit(f"nautobot_fleet: no software version {version!r} on the platform of {name!r}")
        sv_id = sv["id"]
    return nb.patch(f"/api/dcim/devices/{dev['id']}/", {"software_version": sv_id})


def set_image(nb, file_name, sha256=None, size=None, url=None):
    f = nb.find("/api/dcim/software-image-files/", image_file_name=file_name)
    if not f:
        raise SystemExit(f"nautobot_fleet: no software image file {file_name!r}")
    body = {}
    if sha256 is not None:
        body.update(image_file_checksum=sha256, hashing_algorithm="sha256")
    if size is not None:
        body["image_file_size"] = size
    if url is not None:
        body["download_url"] = url
    return nb.patch(f"/api/dcim/software-image-files/{f['id']}/", body)


def delete_device(nb, name):
    nb.delete(f"/api/dcim/devices/{find_device(nb, name)['id']}/")
    return {"deleted": name}


def counts(nb):
    return {
        "devices": nb.count("/api/dcim/devices/"),
        "interfaces": nb.count("/api/dcim/interfaces/"),
        "software_versions": nb.count("/api/dcim/software-versions/"),
        "software_image_files": nb.count("/api/dcim/software-image-files/"),
    }


def _pairs(values, kind):
    out = {}
    for v in values or []:
        if "=" not in v:
            raise SystemExit(f"nautobot_fleet: expected FILE={kind}, got {v!r}")
        k, val = v.split("=", 1)
        out[k] = val
    return out


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--env", help="the DIR/env written by scripts/nautobot start")
    sub = ap.add_subparsers(dest="cmd", required=True)
    ld = sub.add_parser("load")
    ld.add_argument("--devices", type=int, default=50)
    ld.add_argument("--images", type=int, default=5)
    ld.add_argument("--seed", type=int, default=1)
    ld.add_argument("--locations", type=int, default=1)
    ld.add_argument("--image-base-url", default=DEFAULT_IMAGE_BASE_URL)
    ld.add_argument("--image-sha256", action="append", metavar="FILE=HEX")
    ld.add_argument("--image-size", action="append", metavar="FILE=BYTES")
    ld.add_argument("--image-spec", metavar="JSON")
    ld.add_argument("--batch", type=int, default=200)
    ld.add_argument("--workers", type=int, default=2)
    for name, args in [("get", ["name"]), ("set-serial", ["name", "serial"]), ("duplicate-serial", ["name", "other"]),
                       ("set-mac", ["name", "mac"]), ("set-role", ["name", "role"]),
                       ("set-software", ["name", "version"]), ("delete", ["name"]), ("counts", [])]:
        p = sub.add_parser(name)
        for a in args:
            p.add_argument(a)
    si = sub.add_parser("set-image")
    si.add_argument("file")
    si.add_argument("--sha256")
    si.add_argument("--size", type=int)
    si.add_argument("--url")
    a = ap.parse_args(argv)
    nb = Nautobot.from_env(a.env)

    if a.cmd == "load":
        spec = None
        if a.image_spec:
            with open(a.image_spec) as f:
                spec = json.load(f)
        sizes = {k: int(v) for k, v in _pairs(a.image_size, "BYTES").items()}
        out = load_fleet(nb, a.devices, a.images, a.seed, a.locations, a.image_base_url,
                         _pairs(a.image_sha256, "HEX"), sizes, spec, a.batch, a.workers)
        log(f"loaded in {out['seconds']}s: {out}")
    elif a.cmd == "get":
        out = nb.get(f"/api/dcim/devices/{find_device(nb, a.name)['id']}/", depth=1)
    elif a.cmd == "set-serial":
        out = set_serial(nb, a.name, a.serial)
    elif a.cmd == "duplicate-serial":
        out = duplicate_serial(nb, a.name, a.other)
    elif a.cmd == "set-mac":
        out = set_mac(nb, a.name, a.mac)
    elif a.cmd == "set-role":
        out = set_role(nb, a.name, a.role)
    elif a.cmd == "set-software":
        out = set_software(nb, a.name, a.version)
    elif a.cmd == "set-image":
        out = set_image(nb, a.file, a.sha256, a.size, a.url)
    elif a.cmd == "delete":
        out = delete_device(nb, a.name)
    else:
        out = counts(nb)
    print(json.dumps(out, sort_keys=True))


if __name__ == "__main__":
    main()
