# libemcoder: build, install and test the C library and its bindings.
#
#   make lib                      build target/release/libemcoder.{so,a} (cargo, release profile)
#                                 and the link libemcoder.so.0 -> libemcoder.so next to them
#   make install PREFIX=/opt/x    install the libraries, include/emcoder.h and emcoder.pc
#   make uninstall PREFIX=/opt/x  remove what install put there
#   make header                   regenerate include/emcoder.h with cbindgen (commit the result)
#   make test-bindings            the C, C++, Go and Python tests (scripts/test-bindings.sh)
#   make release                  dist/: the manylinux wheels, the tarballs with the CMake and
#                                 pkg-config files, SHA256SUMS (scripts/release.sh; docs/install.md)
#
# After `make install PREFIX=$P` (and export PKG_CONFIG_PATH=$P/lib/pkgconfig):
#   cc app.c $(pkg-config --cflags --libs emcoder)          # libemcoder.so
#   cc app.c $(pkg-config --cflags --libs emcoder-static)   # libemcoder.a + what Rust's std needs
# A program linked against the shared library finds it at run time through the system's
# library path: run `ldconfig` after installing to /usr/local, or set LD_LIBRARY_PATH=$P/lib,
# or link with -Wl,-rpath,$P/lib. (emcoder.pc also lists the static dependencies in
# Libs.private, for `pkg-config --static` where only libemcoder.a is installed.)
#
# Versioning: libemcoder.so has the SONAME libemcoder.so.0 (ffi/build.rs), so programs record
# that name and load it at run time. install puts the library at
# $(LIBDIR)/libemcoder.so.0.<minor>.<patch> with the links libemcoder.so.0 (what programs load)
# and libemcoder.so (what -lemcoder finds at link time). Within SONAME 0 the ABI only grows
# (EMCODER_ABI_VERSION in include/emcoder.h); an incompatible change would bump the 0.

PREFIX ?= /usr/local
DESTDIR ?=
LIBDIR ?= $(PREFIX)/lib
INCLUDEDIR ?= $(PREFIX)/include
CARGO ?= cargo
INSTALL ?= install

# What Rust's standard library needs when libemcoder.a is linked statically, as printed by
# `rustc --print native-static-libs` for Linux (checked on x86_64; gcc_s: unwinding).
STATIC_LIBS := -lgcc_s -lutil -lrt -lpthread -lm -ldl -lc
VERSION := $(shell sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -n1)
# The SONAME's number (keep in step with ffi/build.rs) and the installed file's full name.
SOMAJOR := 0
SOFILE := libemcoder.so.$(SOMAJOR).$(word 2,$(subst ., ,$(VERSION))).$(word 3,$(subst ., ,$(VERSION)))
BUILD := target/release

.PHONY: lib install uninstall header test-bindings release

lib:
	$(CARGO) build --release -p emcoder-ffi
	ln -sf libemcoder.so $(BUILD)/libemcoder.so.$(SOMAJOR)

# emcoder.pc is written for the PREFIX of this install.
install: lib
	$(INSTALL) -d $(DESTDIR)$(LIBDIR)/pkgconfig $(DESTDIR)$(INCLUDEDIR)
	$(INSTALL) -m 755 $(BUILD)/libemcoder.so $(DESTDIR)$(LIBDIR)/$(SOFILE)
	ln -sf $(SOFILE) $(DESTDIR)$(LIBDIR)/libemcoder.so.$(SOMAJOR)
	ln -sf libemcoder.so.$(SOMAJOR) $(DESTDIR)$(LIBDIR)/libemcoder.so
	$(INSTALL) -m 644 $(BUILD)/libemcoder.a $(DESTDIR)$(LIBDIR)/libemcoder.a
	$(INSTALL) -m 644 include/emcoder.h $(DESTDIR)$(INCLUDEDIR)/emcoder.h
	printf '%s\n' \
	  'prefix=$(PREFIX)' \
	  'libdir=$(LIBDIR)' \
	  'includedir=$(INCLUDEDIR)' \
	  '' \
	  'Name: emcoder' \
	  'Description: EmCoder emotion classifier with MC-dropout uncertainty (C API)' \
	  'Version: $(VERSION)' \
	  'Cflags: -I$${includedir}' \
	  'Libs: -L$${libdir} -lemcoder' \
	  'Libs.private: $(STATIC_LIBS)' > $(DESTDIR)$(LIBDIR)/pkgconfig/emcoder.pc
	printf '%s\n' \
	  'prefix=$(PREFIX)' \
	  'libdir=$(LIBDIR)' \
	  'includedir=$(INCLUDEDIR)' \
	  '' \
	  'Name: emcoder-static' \
	  'Description: EmCoder emotion classifier (C API), linked statically' \
	  'Version: $(VERSION)' \
	  'Cflags: -I$${includedir}' \
	  'Libs: $${libdir}/libemcoder.a $(STATIC_LIBS)' > $(DESTDIR)$(LIBDIR)/pkgconfig/emcoder-static.pc

uninstall:
	rm -f $(DESTDIR)$(LIBDIR)/libemcoder.so $(DESTDIR)$(LIBDIR)/libemcoder.so.$(SOMAJOR) \
	  $(DESTDIR)$(LIBDIR)/$(SOFILE) $(DESTDIR)$(LIBDIR)/libemcoder.a \
	  $(DESTDIR)$(INCLUDEDIR)/emcoder.h $(DESTDIR)$(LIBDIR)/pkgconfig/emcoder.pc \
	  $(DESTDIR)$(LIBDIR)/pkgconfig/emcoder-static.pc

header:
	EMCODER_BLESS_HEADER=1 $(CARGO) test -p emcoder-ffi --lib header_drift

test-bindings:
	bash scripts/test-bindings.sh

release:
	bash scripts/release.sh
