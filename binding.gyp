# SPDX-License-Identifier: GPL-2.0-only
#
# Builds the native shim: build/Release/sixtree.node, one shared object that
# is both the N-API addon (native/addon.cc) and a plain C library whose
# blockio_* functions koffi calls directly (native/blockio.c).
# C is compiled as C; SSE4.2 is enabled only on the crc32c function (target
# attribute + runtime dispatch), so the object runs on any x86-64.
{
  "targets": [
    {
      "target_name": "sixtree",
      "sources": ["native/blockio.c", "native/addon.cc"],
      "include_dirs": ["<!(node -p \"require('node-addon-api').include_dir\")"],
      "defines": ["NAPI_VERSION=8", "NAPI_CPP_EXCEPTIONS", "NODE_ADDON_API_DISABLE_DEPRECATED"],
      "cflags": ["-O2", "-Wall", "-Wextra", "-Wno-unused-parameter", "-fvisibility=hidden"],
      "cflags_c": ["-std=gnu11"],
      "cflags_cc": ["-std=c++17", "-fexceptions"],
      "cflags!": ["-fno-exceptions", "-O3"],
      "cflags_cc!": ["-fno-exceptions", "-std=gnu++17", "-std=gnu++20"],
      "ldflags": ["-pthread"]
    }
  ]
}
