package advisor

import (
	"embed"
	"encoding/json"
	"fmt"
	"os"
	"path"
	"sort"
	"strings"
)

// Part is what the part must do, as its spec file says.
type Part struct {
	Name        string       `json:"name"`
	Description string       `json:"description"`
	Needs       Requirements `json:"requirements"`
}

// Requirements are the hard limits a material must meet and the weights
// of what makes one better than another. Zero means "no requirement".
type Requirements struct {
	MinTensile   float64 `json:"min_tensile_mpa"`
	MinModulus   float64 `json:"min_modulus_gpa"`
	MaxModulus   float64 `json:"max_modulus_gpa"` // parts that must flex
	ServiceTemp  float64 `json:"service_temp_c"`
	Outdoor      bool    `json:"outdoor"`   // sun and rain
	Corrosive    bool    `json:"corrosive"` // salt, chemicals
	ImpactLoads  bool    `json:"impact_loads"`
	MaxCostPerKg float64 `json:"max_cost_per_kg"`
	Volume       int     `json:"volume_per_year"`
	Weights      Weights `json:"weights"`
}

// Weights say how much each quality counts in the score; they need not
// sum to 1.
type Weights struct {
	Light     float64 `json:"light"`     // specific stiffness and strength
	Cheap     float64 `json:"cheap"`     // cost per kg
	Durable   float64 `json:"durable"`   // corrosion and UV resistance
	Makeable  float64 `json:"makeable"`  // ease of manufacture in volume
	HeadRoom  float64 `json:"headroom"`  // margin over the strength asked
	HotMargin float64 `json:"hotmargin"` // margin over the service temperature
}

// sampleParts are built into the binary, so the samples load from any
// working directory.
//
//go:embed parts/*.json
var sampleParts embed.FS

// Samples lists the shipped sample parts by name, sorted.
func Samples() []string {
	entries, _ := sampleParts.ReadDir("parts")
	var names []string
	for _, e := range entries {
		names = append(names, strings.TrimSuffix(e.Name(), ".json"))
	}
	sort.Strings(names)
	return names
}

// LoadPart reads a shipped sample by name (one of [Samples]), or else a
// spec file by path.
func LoadPart(nameOrPath string) (Part, error) {
	data, err := sampleParts.ReadFile(path.Join("parts", nameOrPath+".json"))
	if err != nil {
		data, err = os.ReadFile(nameOrPath)
		if err != nil {
			return Part{}, fmt.Errorf("material: no sample part %q (have %s) and no such file", nameOrPath, strings.Join(Samples(), ", "))
		}
	}
	var p Part
	if err := json.Unmarshal(data, &p); err != nil {
		return Part{}, fmt.Errorf("material: part spec %s: %w", nameOrPath, err)
	}
	if p.Name == "" {
		return Part{}, fmt.Errorf("material: part spec %s has no name", nameOrPath)
	}
	return p, nil
}
