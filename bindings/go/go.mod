module emcoder

go 1.24
