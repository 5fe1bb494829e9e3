{
  # One addon, "mfd": thin, batch-shaped natives (one call per packet).
  "targets": [
    {
      "target_name": "mfd",
      "sources": [
        "addon/binding.cc",
        "addon/crc32c.cc",
        "addon/packet_io.cc",
        "addon/zlib_stream.cc",
        "addon/qpl_codec.cc",
        "addon/zero_page.cc"
      ],
      "include_dirs": ["<!(node -p \"require('node-addon-api').include_dir\")"],
      "defines": [
        "NAPI_VERSION=9",
        "NODE_ADDON_API_DISABLE_DEPRECATED",
        "NODE_API_SWALLOW_UNTHROWABLE_EXCEPTIONS",
        "NAPI_DISABLE_CPP_EXCEPTIONS"
      ],
      "cflags_cc": ["-std=c++17", "-O3", "-fvisibility=hidden", "-Wall", "-Wextra"],
      "cflags_cc!": ["-fno-exceptions"],
      "libraries": ["-lz"],
      "ldflags": ["-Wl,-z,relro", "-Wl,-z,now"]
    }
  ]
}
