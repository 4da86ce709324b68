//go:build !emcoder_pkgconfig

package emcoder

// Default linking: the library built in this checkout (`make lib` at the repository root), found
// relative to this package's directory and recorded as an rpath, so that `go test` and programs
// built here run without LD_LIBRARY_PATH. Build with `-tags emcoder_pkgconfig` to link an
// installed copy instead (see link_pkgconfig.go).

/*
#cgo CFLAGS: -I${SRCDIR}/../../include
#cgo LDFLAGS: -L${SRCDIR}/../../target/release -lemcoder -Wl,-rpath,${SRCDIR}/../../target/release
*/
import "C"
