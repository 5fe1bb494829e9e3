{
  # One addon, "mfd": thin, batch-shaped natives (one call per packet).
  # Hardware backends: DSA is always compiled on x86-64 Linux (linux/idxd.h
  # ships with the system); QPL (IAA) and QATzip (QAT) only when pkg-config
  # finds them, otherwise their files compile to stubs that say so. ISA-L's
  # headers (libisal-dev) likewise, but the library is not linked: the addon
  # loads libisal.so.2 at run time where the host has it (addon/isal.h), so
  # one binary serves hosts with and without it. xxHash (libxxhash-dev) is
  # header-only here (XXH_INLINE_ALL, addon/delta.cc): without it delta
  # transfer reports itself unavailable. zlib is linked (the zlib method), and liblz4 when
  # pkg-config finds liblz4-dev (the lz4 method's liblz4 engine; without it, lz4-napi), and libzstd
  # when it finds libzstd-dev (the zstd method's libzstd engine; without it, zstd-napi). Prebuilt
  # binaries (npm run build:prebuilds) set MFD_PORTABLE=1: QPL, QATzip, liblz4 and libzstd, which a
  # host may lack and which are linked, stay out of them (build from source to have them; lz4 runs
  # on lz4-napi there, zstd on zstd-napi).
  # A second addon, "mfd_test" (addon/test/), holds the stand-ins the tests use
  # for devices (a DSA work queue, an IAA engine): built in a clone beside
  # mfd.node (build/Release/mfd_test.node, which src/native/load.ts never
  # takes for the product) and loaded only by the tests
  # (test/helpers/test-natives.ts). Neither the package nor its prebuilt
  # binaries have it.
  "variables": {
    "linux": "<!(node -e \"process.platform === 'linux' ? console.log(1) : (console.error('mfd builds and runs on Linux only (this is ' + process.platform + ')'), process.exit(1))\")",
    "portable": "<!(node -p \"process.env.MFD_PORTABLE === '1' ? 1 : 0\")",
    "have_qpl": "<!(pkg-config --exists 'qpl >= 1.5.0' && echo 1 || echo 0)",
    "have_qatzip": "<!(pkg-config --exists qatzip && echo 1 || echo 0)",
    "have_isal": "<!(pkg-config --exists 'libisal >= 2.25' && echo 1 || echo 0)",
    "have_xxhash": "<!(pkg-config --exists 'libxxhash >= 0.8' && echo 1 || echo 0)",
    "have_lz4": "<!(pkg-config --exists liblz4 && echo 1 || echo 0)",
    "have_zstd": "<!(pkg-config --exists libzstd && echo 1 || echo 0)",
    "have_test": "<!(node -p \"require('fs').existsSync('addon/test/binding.cc') && process.env.MFD_PORTABLE !== '1' ? 1 : 0\")"
  },
  "targets": [
    {
      "target_name": "mfd",
      "sources": [
        "addon/binding.cc",
        "addon/crc32c.cc",
        "addon/isal.cc",
        "addon/packet_io.cc",
        "addon/file_io.cc",
        "addon/zlib_stream.cc",
        "addon/qpl_codec.cc",
        "addon/qpl_hw.cc",
        "addon/qatzip_hw.cc",
        "addon/zero_page.cc",
        "addon/dsa.cc",
        "addon/test_natives.cc",
        "addon/delay_line.cc",
        "addon/socket_channel.cc",
        "addon/qz_members.cc",
        "addon/delta.cc",
        "addon/lz4_block.cc",
        "addon/zstd_stream.cc"
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
      "ldflags": ["-Wl,-z,relro", "-Wl,-z,now"],
      "conditions": [
        ["have_qpl==1 and portable==0", {
          "defines": ["MFD_HAVE_QPL"],
          "cflags_cc": ["<!@(pkg-config --cflags qpl)"],
          "libraries": ["<!@(pkg-config --libs qpl)"]
        }],
        ["have_isal==1", {
          "defines": ["MFD_HAVE_ISAL"],
          "cflags_cc": ["<!@(pkg-config --cflags libisal)"],
          "libraries": ["-ldl"]
        }],
        ["have_lz4==1 and portable==0", {
          "defines": ["MFD_HAVE_LZ4"],
          "libraries": ["-llz4"]
        }],
        ["have_zstd==1 and portable==0", {
          "defines": ["MFD_HAVE_ZSTD"],
          "cflags_cc": ["<!@(pkg-config --cflags libzstd)"],
          "libraries": ["<!@(pkg-config --libs libzstd)"]
        }],
        ["have_xxhash==1", {
          "defines": ["MFD_HAVE_XXHASH"],
          "cflags_cc": ["<!@(pkg-config --cflags libxxhash)"]
        }],
        ["have_qatzip==1 and portable==0", {
          "defines": ["MFD_HAVE_QATZIP"],
          "cflags_cc": ["<!@(pkg-config --cflags qatzip)"],
          "libraries": ["<!@(pkg-config --libs qatzip)"]
        }]
      ]
    }
  ],
  "conditions": [
    ["have_test==1", {
      "targets": [
        {
          "target_name": "mfd_test",
          "sources": ["addon/test/binding.cc", "addon/test/dsa_fake.cc", "addon/test/qpl_fake.cc"],
          "include_dirs": ["<!(node -p \"require('node-addon-api').include_dir\")", "addon"],
          "defines": [
            "NAPI_VERSION=9",
            "NODE_ADDON_API_DISABLE_DEPRECATED",
            "NODE_API_SWALLOW_UNTHROWABLE_EXCEPTIONS",
            "NAPI_DISABLE_CPP_EXCEPTIONS"
          ],
          "cflags_cc": ["-std=c++17", "-O2", "-fvisibility=hidden", "-Wall", "-Wextra"],
          "cflags_cc!": ["-fno-exceptions"],
          "libraries": ["-lz"]
        }
      ]
    }]
  ]
}
