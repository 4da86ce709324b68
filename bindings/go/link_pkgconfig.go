//go:build emcoder_pkgconfig

package emcoder

// Linking an installed libemcoder (`make install PREFIX=...`) through pkg-config: build with
// `-tags emcoder_pkgconfig` and PKG_CONFIG_PATH=$PREFIX/lib/pkgconfig. At run time the shared
// library is found through the system's library path (ldconfig or LD_LIBRARY_PATH).

/*
#cgo pkg-config: emcoder
*/
import "C"
