package conf

import (
	"strings"
	"time"
)

// flagArg is ngx_conf_set_flag_slot: "on" or "off", any case.
func flagArg(d *directive, v *bool) error {
	switch strings.ToLower(d.args[0]) {
	case "on":
		*v = true
	case "off":
		*v = false
	default:
		return Errorf(d.pos, "invalid value %q in %q directive, it must be \"on\" or \"off\"", d.args[0], d.name)
	}
	return nil
}

// msecArg is ngx_conf_set_msec_slot.
func msecArg(d *directive, v *time.Duration) error {
	t, ok := ParseDuration(d.args[0], false)
	if !ok {
		return Errorf(d.pos, "%q directive invalid value", d.name)
	}
	*v = t
	return nil
}

// sizeArg is ngx_conf_set_size_slot.
func sizeArg(d *directive, v *int64) error {
	n, ok := ParseSize(d.args[0])
	if !ok {
		return Errorf(d.pos, "%q directive invalid value", d.name)
	}
	*v = n
	return nil
}

// rateArg is a size that may not hold variables in tlsrelay (NGINX 1.17.0+
// allows them in proxy_upload_rate and proxy_download_rate).
func rateArg(d *directive, v *int64) error {
	if strings.Contains(d.args[0], "$") {
		return Errorf(d.pos, "variables in %q are not supported", d.name)
	}
	return sizeArg(d, v)
}

// numArg is ngx_conf_set_num_slot.
func numArg(d *directive, v *int) error {
	n, ok := atoiInt(d.args[0])
	if !ok {
		return Errorf(d.pos, "%q directive invalid number", d.name)
	}
	*v = n
	return nil
}

// stringArg is a directive's one argument as written.
func stringArg(d *directive, v *string) error {
	*v = d.args[0]
	return nil
}
