package config

import (
	"math/bits"

	"gopkg.in/yaml.v3"
)

// Balancing defaults and limits (see docs/balancing.md).
const (
	// DefaultSlots is routing.slots when at least one lan: interface is
	// configured (fewer when routing.mark_mask has no room for 60).
	DefaultSlots = 60
	// DefaultSlotTable is the first slot routing table: slot s uses
	// table DefaultSlotTable+s.
	DefaultSlotTable = 1000
	// MaxSlots is how many slot rules fit between the "lookup main
	// suppress_prefixlength 0" rule (rule_priority+200) and the active
	// table's rule (rule_priority+299).
	MaxSlots = 98
)

// balancePos remembers where the balancing keys stand, for messages.
type balancePos struct {
	slots, slotTable *yaml.Node
}

func (p *parser) slots(v *yaml.Node) int {
	p.balance.slots = v
	return p.intRange(v, 0, MaxSlots)
}

func (p *parser) slotTable(v *yaml.Node) int {
	p.balance.slotTable = v
	return p.table(v)
}

// MarkRoom returns how many WANs and how many slots fit in mask when
// balancing: the mask's values 1..half-1 are WAN marks and half..2*half-1
// slot marks, half being the value of the mask's top bit (for 0xff00:
// WAN marks 0x0100..0x7f00, slot marks 0x8000..0xff00). A zero or
// non-contiguous mask has no room.
func MarkRoom(mask uint32) (wans, slots int) {
	if mask == 0 || !contiguous(mask) {
		return 0, 0
	}
	// Capped at 2^16: more room than any router has WANs or slots, and
	// 1<<31 would not fit an int on 32-bit targets (ARM, MIPS).
	n := min(bits.OnesCount32(mask), 17)
	half := 1 << (n - 1)
	return half - 1, half
}

// checkBalance applies the balancing defaults and checks what depends on
// several keys: the mask's room for WAN and slot marks and the slot tables'
// range against the other tables.
func (p *parser) checkBalance(c *Config, wansNode *yaml.Node) {
	r := &c.Routing
	if r.SlotTable == 0 && p.balance.slotTable == nil {
		r.SlotTable = DefaultSlotTable
	}
	wanRoom, slotRoom := MarkRoom(r.MarkMask)
	if p.balance.slots == nil {
		if len(c.LAN) > 0 && r.MarkMask != 0 && contiguous(r.MarkMask) {
			// A narrow mask just means fewer, coarser slots.
			r.Slots = min(DefaultSlots, slotRoom)
		}
	} else if r.Slots > slotRoom && r.MarkMask != 0 {
		p.errf(p.balance.slots, "routing.slots %d does not fit routing.mark_mask %#x: it has room for %d slot marks", r.Slots, r.MarkMask, slotRoom)
	}
	if r.Slots == 0 {
		return
	}
	if len(c.WANs) > wanRoom && r.MarkMask != 0 && contiguous(r.MarkMask) {
		at := p.balance.slots
		if at == nil {
			at = wansNode
		}
		p.errf(at, "with balancing (routing.slots %d) routing.mark_mask %#x has room for %d WANs, not %d: widen the mask or set routing.slots: 0",
			r.Slots, r.MarkMask, wanRoom, len(c.WANs))
	}
	first, last := int64(r.SlotTable), int64(r.SlotTable)+int64(r.Slots)-1
	at := p.balance.slotTable
	if at == nil {
		at = p.balance.slots
	}
	if first > 0 && last > 1<<31-1 {
		p.errf(at, "slot tables %d-%d go beyond the largest table 2147483647", first, last)
	}
	for _, t := range []int{253, 254, 255} { // default, main, local (0 is below any first)
		if int64(t) >= first && int64(t) <= last {
			p.errf(at, "slot tables %d-%d include the kernel's %q table %d; move routing.slot_table", first, last, reservedTables[t], t)
			break
		}
	}
	if a := int64(r.ActiveTable); a >= first && a <= last {
		p.errf(at, "slot tables %d-%d include routing.active_table %d", first, last, a)
	}
	for i, w := range c.WANs {
		if t := int64(w.Table); t >= first && t <= last && i < len(p.wanPositions) {
			p.errf(p.wanPositions[i].table, "table %d of WAN %q is inside the balancing slot tables %d-%d (routing.slot_table + routing.slots); pick another or move routing.slot_table",
				t, w.Name, first, last)
		}
	}
}
