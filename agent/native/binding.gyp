{
  "targets": [
    {
      "target_name": "vmsnap_native",
      "sources": ["vmsnap_native.c"],
      "cflags": ["-Wall", "-Wextra", "-O2"]
    }
  ]
}
