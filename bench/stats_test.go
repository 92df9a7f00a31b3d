package bench

import (
	"math"
	"testing"
	"time"
)

func TestSummarize(t *testing.T) {
	tests := []struct {
		in            []float64
		med, min, max float64
		n             int
	}{
		{[]float64{3, 1, 2}, 2, 1, 3, 3},
		{[]float64{4, 1, 3, 2}, 2.5, 1, 4, 4},
		{[]float64{5}, 5, 5, 5, 1},
		{[]float64{math.NaN(), 7, 9}, 8, 7, 9, 2},
	}
	for i, tt := range tests {
		s := Summarize(tt.in)
		if s.Median != tt.med || s.Min != tt.min || s.Max != tt.max || s.N != tt.n {
			t.Errorf("#%d: got %+v, want median %v min %v max %v n %d", i, s, tt.med, tt.min, tt.max, tt.n)
		}
	}
	if s := Summarize(nil); s.Valid() {
		t.Errorf("Summarize(nil) = %+v, want invalid", s)
	}
}

func TestPercentile(t *testing.T) {
	var ds []time.Duration
	for i := 100; i >= 1; i-- {
		ds = append(ds, time.Duration(i)*time.Millisecond)
	}
	for _, tt := range []struct {
		p    float64
		want time.Duration
	}{{50, 50 * time.Millisecond}, {99, 99 * time.Millisecond}, {100, 100 * time.Millisecond}, {0.1, time.Millisecond}} {
		if got := Percentile(ds, tt.p); got != tt.want {
			t.Errorf("p%v: got %v, want %v", tt.p, got, tt.want)
		}
	}
	if got := Percentile(nil, 50); got != 0 {
		t.Errorf("empty: got %v", got)
	}
}

func TestRatio(t *testing.T) {
	a, b := Summarize([]float64{2}), Summarize([]float64{4})
	if r := Ratio(a, b); r != 0.5 {
		t.Errorf("got %v, want 0.5", r)
	}
	if r := Ratio(a, Summary{}); !math.IsNaN(r) {
		t.Errorf("missing baseline: got %v, want NaN", r)
	}
}

func TestParseOpenSSLSpeed(t *testing.T) {
	out := `version: 3.0.22
                  sign    verify    sign/s verify/s
rsa 2048 bits 0.001112s 0.000033s    1000.0  40000.0
                              sign    verify    sign/s verify/s
 256 bits ecdsa (nistp256)   0.0000s   0.0001s  25000.0   8000.0
                              op      op/s
 253 bits ecdh (X25519)   0.0001s  20000.0
`
	refs, err := parseOpenSSLSpeed(out)
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]float64{
		OpRSASign: 1e6, OpRSAVerify: 25e3, OpECDSASign: 40e3, OpECDSAVerify: 125e3,
		OpX25519KeyGen: 50e3, OpX25519Shared: 50e3,
	}
	for _, r := range refs {
		if math.Abs(r.NsPerOp-want[r.Name]) > 1e-6 {
			t.Errorf("%s: %v ns, want %v", r.Name, r.NsPerOp, want[r.Name])
		}
	}
	if _, err := parseOpenSSLSpeed("nothing"); err == nil {
		t.Error("no rates: no error")
	}
}
