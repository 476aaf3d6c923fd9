#!/usr/bin/env python3
"""Draws the Capsule POS icon set (RGBA PNGs) with the standard library only.

A dark-teal rounded square with a white horizontal capsule (pill) whose left half is amber.
Run from anywhere: python3 src-tauri/icons/make_icons.py
"""
import os
import struct
import zlib

HERE = os.path.dirname(os.path.abspath(__file__))


def png(path, size, pixel):
    rows = bytearray()
    for y in range(size):
        rows.append(0)
        for x in range(size):
            rows.extend(pixel(x + 0.5, y + 0.5, size))

    def chunk(kind, data):
        c = kind + data
        return struct.pack(">I", len(data)) + c + struct.pack(">I", zlib.crc32(c) & 0xFFFFFFFF)

    ihdr = struct.pack(">IIBBBBB", size, size, 8, 6, 0, 0, 0)
    with open(path, "wb") as f:
        f.write(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr)
                + chunk(b"IDAT", zlib.compress(bytes(rows), 9)) + chunk(b"IEND", b""))


def coverage(d, aa):
    """Signed distance (negative inside) to an anti-aliased coverage in 0..1."""
    return max(0.0, min(1.0, 0.5 - d / aa))


def rounded_rect_sd(x, y, cx, cy, hw, hh, r):
    qx, qy = abs(x - cx) - (hw - r), abs(y - cy) - (hh - r)
    ox, oy = max(qx, 0.0), max(qy, 0.0)
    return (ox * ox + oy * oy) ** 0.5 + min(max(qx, qy), 0.0) - r


def pixel(x, y, size):
    s = size
    aa = max(1.0, s / 256)
    bg = coverage(rounded_rect_sd(x, y, s / 2, s / 2, s * 0.47, s * 0.47, s * 0.2), aa)
    if bg == 0:
        return (0, 0, 0, 0)
    r, g, b = 16, 94, 98  # teal
    pill = coverage(rounded_rect_sd(x, y, s / 2, s / 2, s * 0.34, s * 0.15, s * 0.15), aa)
    if pill > 0:
        fr, fg, fb = (245, 166, 35) if x < s / 2 else (250, 250, 245)
        r = round(r + (fr - r) * pill)
        g = round(g + (fg - g) * pill)
        b = round(b + (fb - b) * pill)
    return (r, g, b, round(255 * bg))


for name, size in [("32x32.png", 32), ("128x128.png", 128), ("128x128@2x.png", 256), ("icon.png", 512)]:
    png(os.path.join(HERE, name), size, pixel)
    print("wrote", name, size)
