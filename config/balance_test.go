package config

import (
	"errors"
	"strings"
	"testing"
)

const twoWANs = `
  - {name: a, interface: wan0, table: 10, addressing: external, probe: {targets: [198.51.100.1]}}
  - {name: b, interface: wan1, table: 11, addressing: external, nat: true, probe: {targets: [198.51.100.1]}}
`

func TestBalanceDefaults(t *testing.T) {
	for _, tc := range []struct {
		name, yaml      string
		slots, slotTbl  int
		natA, natB      bool
		wantSlotsReason string
	}{
		{"lan turns balancing on", "lan: [lan0]\nwans:" + twoWANs, DefaultSlots, DefaultSlotTable, false, true, ""},
		{"no lan: off", "wans:" + twoWANs, 0, DefaultSlotTable, false, true, ""},
		{"explicit off", "lan: [lan0]\nrouting: {slots: 0}\nwans:" + twoWANs, 0, DefaultSlotTable, false, true, ""},
		{"explicit without lan", "routing: {slots: 10, slot_table: 500}\nwans:" + twoWANs, 10, 500, false, true, ""},
		// 4 bits: WAN marks 1..7, slot marks 8..15.
		{"narrow mask shrinks the default", "lan: [lan0]\nrouting: {mark_mask: 0xf0}\nwans:" + twoWANs, 8, DefaultSlotTable, false, true, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, err := Parse("f.yaml", []byte(tc.yaml))
			if err != nil {
				t.Fatal(err)
			}
			if c.Routing.Slots != tc.slots || c.Routing.SlotTable != tc.slotTbl {
				t.Errorf("slots %d table %d, want %d %d", c.Routing.Slots, c.Routing.SlotTable, tc.slots, tc.slotTbl)
			}
			if c.WANs[0].NAT != tc.natA || c.WANs[1].NAT != tc.natB {
				t.Errorf("nat = %v %v", c.WANs[0].NAT, c.WANs[1].NAT)
			}
		})
	}
}

func TestBalanceErrors(t *testing.T) {
	for _, tc := range []struct{ name, yaml, want string }{
		{"too many slots", "routing:\n  slots: 99\nwans:" + twoWANs, `f.yaml:2:10: 99 is out of range [0, 98]`},
		{"slots beyond the mask", "routing:\n  mark_mask: 0xf0\n  slots: 9\nwans:" + twoWANs,
			`f.yaml:3:10: routing.slots 9 does not fit routing.mark_mask 0xf0: it has room for 8 slot marks`},
		{"one-bit mask cannot balance", "lan: [lan0]\nrouting:\n  mark_mask: 0x100\nwans:" + twoWANs,
			"room for 0 WANs, not 2: widen the mask or set routing.slots: 0"},
		{"slot tables over a WAN table", "routing:\n  slots: 10\n  slot_table: 5\nwans:" + twoWANs,
			`f.yaml:5:39: table 10 of WAN "a" is inside the balancing slot tables 5-14`},
		{"slot tables over reserved ones", "routing:\n  slots: 10\n  slot_table: 250\nwans:" + twoWANs,
			`f.yaml:3:15: slot tables 250-259 include the kernel's "default" table 253`},
		{"slot tables over the active table", "routing:\n  slots: 4\n  slot_table: 199\nwans:" + twoWANs,
			`f.yaml:3:15: slot tables 199-202 include routing.active_table 200`},
		{"slot tables past the end", "routing:\n  slots: 4\n  slot_table: 2147483646\nwans:" + twoWANs,
			`slot tables 2147483646-2147483649 go beyond the largest table`},
		{"default slot table over a WAN", "lan: [lan0]\nwans:\n  - {name: a, interface: wan0, table: 1010, addressing: external, probe: {targets: [198.51.100.1]}}\n",
			`f.yaml:3:39: table 1010 of WAN "a" is inside the balancing slot tables 1000-1059`},
		{"nat not a bool", "wans:\n  - {name: a, interface: wan0, table: 10, addressing: external, nat: yes, probe: {targets: [198.51.100.1]}}\n",
			`f.yaml:2:70: expected true or false, got "yes"`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Parse("f.yaml", []byte(tc.yaml))
			var ps Problems
			if !errors.As(err, &ps) {
				t.Fatalf("err = %v, want Problems", err)
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("got:\n%s\nwant a line containing %q", err, tc.want)
			}
		})
	}
}

func TestMarkRoom(t *testing.T) {
	for _, tc := range []struct {
		mask        uint32
		wans, slots int
	}{
		{0xff00, 127, 128}, {0xf0, 7, 8}, {0x100, 0, 1}, {0, 0, 0}, {0xf0f0, 0, 0}, {0xffffffff, 1<<16 - 1, 1 << 16},
	} {
		if w, s := MarkRoom(tc.mask); w != tc.wans || s != tc.slots {
			t.Errorf("MarkRoom(%#x) = %d, %d; want %d, %d", tc.mask, w, s, tc.wans, tc.slots)
		}
	}
}
