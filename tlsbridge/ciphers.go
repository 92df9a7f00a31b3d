package tlsbridge

import (
	"crypto/tls"
	"errors"
	"fmt"
	"sort"
	"strings"
)

//go:generate sh -c "go run gen_ciphertable.go > ciphertable.go"

// OpenSSL algorithm bits (ssl_local.h), as far as the cipher-string
// language can see them.
type algBits = uint32

const (
	kRSA algBits = 1 << iota
	kDHE
	kECDHE
	kPSK
	kRSAPSK
	kECDHEPSK
	kDHEPSK
	kSRP
	kGOST
	kGOST18
)

const (
	aRSA algBits = 1 << iota
	aDSS
	aNULL
	aECDSA
	aPSK
	aGOST01
	aGOST12
	aSRP
)

const (
	encDES algBits = 1 << iota
	enc3DES
	encRC4
	encRC2
	encIDEA
	encNULL
	encAES128
	encAES256
	encCAMELLIA128
	encCAMELLIA256
	encGOST
	encSEED
	encAES128GCM
	encAES256GCM
	encAES128CCM
	encAES256CCM
	encAES128CCM8
	encAES256CCM8
	encCHACHA20
	encARIA128GCM
	encARIA256GCM
)

const (
	macMD5 algBits = 1 << iota
	macSHA1
	macGOST
	macSHA256
	macSHA384
	macAEAD
)

const (
	verSSL3  uint16 = 0x0300
	verTLS1  uint16 = 0x0301
	verTLS12 uint16 = 0x0303
)

// Strength classes (algo_strength).
const (
	strNone       algBits = 0x01
	strLow        algBits = 0x02
	strMedium     algBits = 0x04
	strHigh       algBits = 0x08
	strFIPS       algBits = 0x10
	strNotDefault algBits = 0x20
	strStrongMask algBits = 0x1f
	strDefaultMsk algBits = 0x20
)

const (
	encAES      = encAES128 | encAES256 | encAES128GCM | encAES256GCM | encAES128CCM | encAES256CCM | encAES128CCM8 | encAES256CCM8
	encCAMELLIA = encCAMELLIA128 | encCAMELLIA256
	encARIA     = encARIA128GCM | encARIA256GCM
	encCBC      = encDES | enc3DES | encRC2 | encIDEA | encAES128 | encAES256 | encCAMELLIA128 | encCAMELLIA256 | encSEED
	kPSKAll     = kPSK | kECDHEPSK | kDHEPSK | kRSAPSK
	all32       = ^algBits(0)
)

// osslSuite is one row of OpenSSL's cipher table.
type osslSuite struct {
	id       uint16
	name     string // OpenSSL name
	std      string // IANA name
	kx, au   algBits
	enc, mac algBits
	minTLS   uint16
	bits     int // strength_bits
	strength algBits
}

// cipherAlias is one row of OpenSSL 3.0's cipher_aliases table
// (ssl/ssl_ciph.c).
type cipherAlias struct {
	name             string
	kx, au, enc, mac algBits
	minTLS           uint16
	strength         algBits
}

var cipherAliases = []cipherAlias{
	{name: "ALL", enc: ^encNULL},
	{name: "COMPLEMENTOFALL", enc: encNULL},
	{name: "COMPLEMENTOFDEFAULT", strength: strNotDefault},
	{name: "kRSA", kx: kRSA},
	{name: "kEDH", kx: kDHE},
	{name: "kDHE", kx: kDHE},
	{name: "DH", kx: kDHE},
	{name: "kEECDH", kx: kECDHE},
	{name: "kECDHE", kx: kECDHE},
	{name: "ECDH", kx: kECDHE},
	{name: "kPSK", kx: kPSK},
	{name: "kRSAPSK", kx: kRSAPSK},
	{name: "kECDHEPSK", kx: kECDHEPSK},
	{name: "kDHEPSK", kx: kDHEPSK},
	{name: "kSRP", kx: kSRP},
	{name: "kGOST", kx: kGOST},
	{name: "kGOST18", kx: kGOST18},
	{name: "aRSA", au: aRSA},
	{name: "aDSS", au: aDSS},
	{name: "DSS", au: aDSS},
	{name: "aNULL", au: aNULL},
	{name: "aECDSA", au: aECDSA},
	{name: "ECDSA", au: aECDSA},
	{name: "aPSK", au: aPSK},
	{name: "aGOST01", au: aGOST01},
	{name: "aGOST12", au: aGOST12},
	{name: "aGOST", au: aGOST01 | aGOST12},
	{name: "aSRP", au: aSRP},
	{name: "EDH", kx: kDHE, au: ^aNULL},
	{name: "DHE", kx: kDHE, au: ^aNULL},
	{name: "EECDH", kx: kECDHE, au: ^aNULL},
	{name: "ECDHE", kx: kECDHE, au: ^aNULL},
	{name: "NULL", enc: encNULL},
	{name: "RSA", kx: kRSA, au: aRSA},
	{name: "ADH", kx: kDHE, au: aNULL},
	{name: "AECDH", kx: kECDHE, au: aNULL},
	{name: "PSK", kx: kPSKAll},
	{name: "SRP", kx: kSRP},
	{name: "3DES", enc: enc3DES},
	{name: "RC4", enc: encRC4},
	{name: "RC2", enc: encRC2},
	{name: "IDEA", enc: encIDEA},
	{name: "SEED", enc: encSEED},
	{name: "eNULL", enc: encNULL},
	{name: "GOST89", enc: encGOST},
	{name: "AES128", enc: encAES128 | encAES128GCM | encAES128CCM | encAES128CCM8},
	{name: "AES256", enc: encAES256 | encAES256GCM | encAES256CCM | encAES256CCM8},
	{name: "AES", enc: encAES},
	{name: "AESGCM", enc: encAES128GCM | encAES256GCM},
	{name: "AESCCM", enc: encAES128CCM | encAES256CCM | encAES128CCM8 | encAES256CCM8},
	{name: "AESCCM8", enc: encAES128CCM8 | encAES256CCM8},
	{name: "CAMELLIA128", enc: encCAMELLIA128},
	{name: "CAMELLIA256", enc: encCAMELLIA256},
	{name: "CAMELLIA", enc: encCAMELLIA},
	{name: "CHACHA20", enc: encCHACHA20},
	{name: "GOST2012-GOST8912-GOST8912", enc: encGOST},
	{name: "ARIA", enc: encARIA},
	{name: "ARIAGCM", enc: encARIA128GCM | encARIA256GCM},
	{name: "ARIA128", enc: encARIA128GCM},
	{name: "ARIA256", enc: encARIA256GCM},
	{name: "CBC", enc: encCBC},
	{name: "MD5", mac: macMD5},
	{name: "SHA1", mac: macSHA1},
	{name: "SHA", mac: macSHA1},
	{name: "GOST94", mac: macGOST},
	{name: "GOST89MAC", mac: macGOST},
	{name: "SHA256", mac: macSHA256},
	{name: "SHA384", mac: macSHA384},
	{name: "GOST12", mac: macGOST},
	{name: "SSLv3", minTLS: verSSL3},
	{name: "TLSv1", minTLS: verTLS1},
	{name: "TLSv1.0", minTLS: verTLS1},
	{name: "TLSv1.2", minTLS: verTLS12},
	{name: "LOW", strength: strLow},
	{name: "MEDIUM", strength: strMedium},
	{name: "HIGH", strength: strHigh},
	{name: "FIPS", enc: ^encNULL, strength: strFIPS},
	{name: "EDH-DSS-DES-CBC3-SHA", kx: kDHE, au: aDSS, enc: enc3DES, mac: macSHA1, strength: strHigh | strFIPS},
	{name: "EDH-RSA-DES-CBC3-SHA", kx: kDHE, au: aRSA, enc: enc3DES, mac: macSHA1, strength: strHigh | strFIPS},
}

// DefaultCiphers is tlsrelay's default proxy_ssl_ciphers (what an empty
// PolicyConfig.Ciphers means): the ECDHE suites with AEAD ciphers, ECDSA
// and RSA certificates, AES-GCM first, then ChaCha20-Poly1305. It is
// Mozilla's "intermediate" list without the DHE suites crypto/tls lacks. It
// differs from NGINX, whose default is OpenSSL's "DEFAULT": no RSA key
// exchange (no forward secrecy) and no CBC suites, so TLSv1 and TLSv1.1,
// which have neither AEAD nor SHA-2 suites, need proxy_ssl_ciphers set.
// engine/conf fills in the same string (conf.DefaultProxySSLCiphers).
const DefaultCiphers = "ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-RSA-AES128-GCM-SHA256:" +
	"ECDHE-ECDSA-AES256-GCM-SHA384:ECDHE-RSA-AES256-GCM-SHA384:" +
	"ECDHE-ECDSA-CHACHA20-POLY1305:ECDHE-RSA-CHACHA20-POLY1305"

// opensslDefaultCiphers is OSSL_default_cipher_list() in OpenSSL 3.0.
const opensslDefaultCiphers = "ALL:!COMPLEMENTOFDEFAULT:!eNULL"

// defaultSecLevel is OpenSSL's compiled-in security level. For the suites
// crypto/tls implements, levels 1 and 2 select the same.
const defaultSecLevel = 1

// CipherList is an evaluated OpenSSL cipher string.
type CipherList struct {
	// Go holds the suites to put in tls.Config.CipherSuites: the suites
	// OpenSSL would offer, in OpenSSL's order, that crypto/tls implements
	// (its insecure ones included).
	Go []uint16
	// Missing names the suites OpenSSL would offer that crypto/tls does not
	// implement (PSK and SRP suites, which a client offers only with PSK
	// or SRP configured, are left out, as is whatever @SECLEVEL excludes).
	Missing []string
	// Offered is what an OpenSSL client would offer in its ClientHello
	// (TLS ≤1.2 part): the list after @SECLEVEL, without PSK and SRP
	// suites; `openssl ciphers -s` prints it. Go and Missing partition it.
	Offered []string
	// OpenSSL is the whole list in OpenSSL's order, as `openssl ciphers`
	// prints it without -s (TLS 1.3 suites excluded).
	OpenSSL []string
	// SecLevel is the security level in effect (@SECLEVEL=n, default 1).
	SecLevel int
	// SuiteB is set when the string started with SUITEB128, SUITEB128ONLY,
	// SUITEB128C2 or SUITEB192.
	SuiteB bool
}

// errNoCipherMatch is OpenSSL's SSL_R_NO_CIPHER_MATCH.
var errNoCipherMatch = errors.New("no cipher match")

// cipherNode is one suite in the list being built.
type cipherNode struct {
	s      *osslSuite
	active bool
}

type cipherRule int

const (
	ruleAdd cipherRule = iota
	ruleKill
	ruleDel
	ruleOrd
	ruleBump
	ruleSpecial
)

// cipherState is ssl_create_cipher_list's working list.
type cipherState struct {
	list     []*cipherNode
	secLevel int
}

// ParseCipherString evaluates an OpenSSL cipher string
// (SSL_CTX_set_cipher_list in OpenSSL 3.0) and maps the result to
// crypto/tls. Like OpenSSL, unknown items are ignored; the string fails only
// on a malformed item ("invalid command") or when it selects no TLS 1.2
// suite at all ("no cipher match"). An empty Go list is not an error here;
// NewPolicy decides whether it matters.
func ParseCipherString(s string) (CipherList, error) {
	st := &cipherState{secLevel: defaultSecLevel}
	for i := range opensslSuites {
		st.list = append(st.list, &cipherNode{s: &opensslSuites[i]})
	}
	var cl CipherList
	rule := s
	if b, ok := suiteB(s); ok {
		rule, cl.SuiteB = b, true
	}
	if strings.HasPrefix(rule, "DEFAULT") {
		if err := st.process(opensslDefaultCiphers); err != nil {
			return CipherList{}, err
		}
		rule = strings.TrimPrefix(rule[len("DEFAULT"):], ":")
	}
	if rule != "" {
		if err := st.process(rule); err != nil {
			return CipherList{}, err
		}
	}
	goSuites := goSuiteSet()
	cl.SecLevel = st.secLevel
	for _, n := range st.list {
		if !n.active {
			continue
		}
		cl.OpenSSL = append(cl.OpenSSL, n.s.name)
		if !secLevelAllows(st.secLevel, n.s) || n.s.kx&(kPSKAll|kSRP) != 0 || n.s.au&aSRP != 0 {
			continue
		}
		cl.Offered = append(cl.Offered, n.s.name)
		if goSuites[n.s.id] {
			cl.Go = append(cl.Go, n.s.id)
		} else {
			cl.Missing = append(cl.Missing, n.s.name)
		}
	}
	if len(cl.OpenSSL) == 0 {
		return cl, errNoCipherMatch
	}
	return cl, nil
}

// suiteB mirrors check_suiteb_cipher_list: a string starting with a Suite B
// keyword is replaced as a whole.
func suiteB(s string) (string, bool) {
	switch {
	case strings.HasPrefix(s, "SUITEB128ONLY"):
		return "ECDHE-ECDSA-AES128-GCM-SHA256", true
	case strings.HasPrefix(s, "SUITEB128C2"):
		return "ECDHE-ECDSA-AES256-GCM-SHA384", true
	case strings.HasPrefix(s, "SUITEB128"):
		return "ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-ECDSA-AES256-GCM-SHA384", true
	case strings.HasPrefix(s, "SUITEB192"):
		return "ECDHE-ECDSA-AES256-GCM-SHA384", true
	}
	return s, false
}

// goSuiteSet is every TLS ≤1.2 suite crypto/tls implements.
func goSuiteSet() map[uint16]bool {
	m := make(map[uint16]bool)
	for _, s := range tls.CipherSuites() {
		m[s.ID] = true
	}
	for _, s := range tls.InsecureCipherSuites() {
		m[s.ID] = true
	}
	return m
}

// secLevelAllows mirrors ssl_security_default_callback for
// SSL_SECOP_CIPHER_SUPPORTED: what OpenSSL leaves out of a ClientHello.
func secLevelAllows(level int, s *osslSuite) bool {
	if level <= 0 {
		return true
	}
	minBits := [...]int{80, 112, 128, 192, 256}[min(level, 5)-1]
	switch {
	case s.bits < minBits, s.au&aNULL != 0, s.mac&macMD5 != 0:
		return false
	case minBits > 160 && s.mac&macSHA1 != 0:
		return false
	case level >= 2 && s.enc&encRC4 != 0:
		return false
	case level >= 3 && s.kx&(kDHE|kECDHE|kDHEPSK|kECDHEPSK) == 0:
		return false
	}
	return true
}

func itemSep(c byte) bool { return c == ':' || c == ' ' || c == ';' || c == ',' }

func nameChar(c byte) bool {
	return c >= 'A' && c <= 'Z' || c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-' || c == '.' || c == '='
}

// process is ssl_cipher_process_rulestr.
func (st *cipherState) process(s string) error {
	l := 0
	for l < len(s) {
		ch := s[l]
		var rule cipherRule
		switch ch {
		case '-':
			rule = ruleDel
			l++
		case '+':
			rule = ruleOrd
			l++
		case '!':
			rule = ruleKill
			l++
		case '@':
			rule = ruleSpecial
			l++
		default:
			rule = ruleAdd
		}
		if itemSep(ch) {
			l++
			continue
		}
		var kx, au, enc, mac, strength algBits
		var minTLS uint16
		var id uint16
		found := false
		var buf string
		for {
			start := l
			for l < len(s) && nameChar(s[l]) {
				l++
			}
			buf = s[start:l]
			if buf == "" {
				return fmt.Errorf("invalid command at offset %d (%q)", start, s[start:])
			}
			if rule == ruleSpecial {
				break
			}
			multi := l < len(s) && s[l] == '+'
			if multi {
				l++
			}
			found = false
			var a cipherAlias
			var suiteID uint16
			if su := lookupSuite(buf); su != nil {
				a = cipherAlias{kx: su.kx, au: su.au, enc: su.enc, mac: su.mac, strength: su.strength}
				suiteID, found = su.id, true
			} else if al := lookupAlias(buf); al != nil {
				a, found = *al, true
			}
			if !found {
				break
			}
			if !combine(&kx, a.kx) || !combine(&au, a.au) || !combine(&enc, a.enc) || !combine(&mac, a.mac) {
				found = false
				break
			}
			if a.strength&strStrongMask != 0 {
				if strength&strStrongMask != 0 {
					strength &= (a.strength & strStrongMask) | ^strStrongMask
					if strength&strStrongMask == 0 {
						found = false
						break
					}
				} else {
					strength = a.strength & strStrongMask
				}
			}
			if a.strength&strDefaultMsk != 0 {
				if strength&strDefaultMsk != 0 {
					strength &= (a.strength & strDefaultMsk) | ^strDefaultMsk
					if strength&strDefaultMsk == 0 {
						found = false
						break
					}
				} else {
					strength |= a.strength & strDefaultMsk
				}
			}
			if suiteID != 0 {
				id = suiteID
			} else if a.minTLS != 0 {
				if minTLS != 0 && minTLS != a.minTLS {
					found = false
					break
				}
				minTLS = a.minTLS
			}
			if !multi {
				break
			}
		}
		switch {
		case rule == ruleSpecial:
			switch {
			case buf == "STRENGTH":
				st.strengthSort()
			case len(buf) == 10 && strings.HasPrefix(buf, "SECLEVEL=") && buf[9] >= '0' && buf[9] <= '5':
				st.secLevel = int(buf[9] - '0')
			default:
				return fmt.Errorf("invalid command %q", "@"+buf)
			}
			for l < len(s) && !itemSep(s[l]) {
				l++
			}
		case found:
			st.apply(rule, func(c *osslSuite) bool {
				return (id == 0 || c.id == id) && (kx == 0 || kx&c.kx != 0) && (au == 0 || au&c.au != 0) && (enc == 0 || enc&c.enc != 0) &&
					(mac == 0 || mac&c.mac != 0) && (minTLS == 0 || minTLS == c.minTLS) &&
					(strength&strStrongMask == 0 || strength&strStrongMask&c.strength != 0) &&
					(strength&strDefaultMsk == 0 || strength&strDefaultMsk&c.strength != 0)
			})
		default:
			for l < len(s) && !itemSep(s[l]) {
				l++
			}
		}
	}
	return nil
}

// combine ANDs an alias mask into an accumulated one; false when nothing
// is left (OpenSSL then ignores the item).
func combine(acc *algBits, m algBits) bool {
	if m == 0 {
		return true
	}
	if *acc == 0 {
		*acc = m
		return true
	}
	*acc &= m
	return *acc != 0
}

func lookupSuite(name string) *osslSuite {
	for i := range opensslSuites {
		if opensslSuites[i].name == name {
			return &opensslSuites[i]
		}
	}
	return nil
}

func lookupAlias(name string) *cipherAlias {
	for i := range cipherAliases {
		if cipherAliases[i].name == name {
			return &cipherAliases[i]
		}
	}
	return nil
}

// apply is ssl_cipher_apply_rule over the suites match selects.
func (st *cipherState) apply(rule cipherRule, match func(*osslSuite) bool) {
	var hit, rest []*cipherNode
	switch rule {
	case ruleAdd: // append inactive matches at the tail
		for _, n := range st.list {
			if match(n.s) && !n.active {
				n.active = true
				hit = append(hit, n)
			} else {
				rest = append(rest, n)
			}
		}
		st.list = append(rest, hit...)
	case ruleOrd: // move active matches to the tail
		for _, n := range st.list {
			if match(n.s) && n.active {
				hit = append(hit, n)
			} else {
				rest = append(rest, n)
			}
		}
		st.list = append(rest, hit...)
	case ruleDel, ruleBump: // move active matches to the head, in order
		for _, n := range st.list {
			if match(n.s) && n.active {
				if rule == ruleDel {
					n.active = false
				}
				hit = append(hit, n)
			} else {
				rest = append(rest, n)
			}
		}
		st.list = append(hit, rest...)
	case ruleKill: // remove for good
		for _, n := range st.list {
			if !match(n.s) {
				rest = append(rest, n)
			}
		}
		st.list = rest
	}
}

// strengthSort is ssl_cipher_strength_sort: active suites, strongest first,
// stable.
func (st *cipherState) strengthSort() {
	maxBits := 0
	for _, n := range st.list {
		if n.active && n.s.bits > maxBits {
			maxBits = n.s.bits
		}
	}
	for b := maxBits; b >= 0; b-- {
		st.apply(ruleOrd, func(c *osslSuite) bool { return c.bits == b })
	}
}

// suiteFamilies are the families SummarizeSuites counts OpenSSL suite
// names in, by a part of the name (or its start: DHE, which ECDHE names
// contain too), first match wins.
var suiteFamilies = []struct {
	part, family string
	prefix       bool
}{
	{"PSK", "PSK", false}, {"SRP", "SRP", false}, {"ARIA", "ARIA", false}, {"CAMELLIA", "Camellia", false},
	{"CCM", "CCM", false}, {"SEED", "SEED", false}, {"IDEA", "IDEA", false}, {"DHE-", "DHE", true},
	{"CHACHA20", "ChaCha20", false}, {"SHA384", "CBC-SHA384", false}, {"SHA256", "CBC-SHA256", false},
}

// SummarizeSuites describes a list of OpenSSL suite names by family, most
// first: "20 DHE, 14 PSK, 8 ARIA, 2 other" (a `-t` warning line instead
// of dozens of names).
func SummarizeSuites(names []string) string {
	counts := map[string]int{}
	var order []string
	for _, n := range names {
		family := "other"
		for _, f := range suiteFamilies {
			if f.prefix && strings.HasPrefix(n, f.part) || !f.prefix && strings.Contains(n, f.part) {
				family = f.family
				break
			}
		}
		if counts[family] == 0 {
			order = append(order, family)
		}
		counts[family]++
	}
	sort.SliceStable(order, func(i, j int) bool { return counts[order[i]] > counts[order[j]] })
	parts := make([]string, len(order))
	for i, f := range order {
		parts[i] = fmt.Sprintf("%d %s", counts[f], f)
	}
	return strings.Join(parts, ", ")
}
