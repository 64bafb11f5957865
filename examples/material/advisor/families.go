package advisor

// Family is one material family with the typical properties of a common
// engineering grade of it. The figures are representative values, not
// design allowables: they are mid-range values for the named grades from
// M. F. Ashby, "Materials Selection in Mechanical Design", 4th ed.
// (Butterworth-Heinemann, 2011), chapter 4 and its property charts, cross-
// checked against typical datasheet values published by MatWeb
// (matweb.com) for the same grades. Resistance and manufacturability are
// 0–1 ratings read from Ashby's durability tables (A: excellent = 1 … E:
// unacceptable = 0).
type Family struct {
	Name        string
	Grade       string  // the grade the figures describe
	Density     float64 // g/cm³
	Tensile     float64 // tensile (or, for ceramics, flexural) strength, MPa
	Modulus     float64 // Young's modulus, GPa
	MaxTemp     float64 // maximum service temperature, °C
	Corrosion   float64 // resistance to water and salt, 0–1
	UV          float64 // resistance to sunlight, 0–1
	CostPerKg   float64 // US$/kg, bulk
	Manufacture float64 // ease of making parts in volume, 0–1
	Brittle     bool    // fails without warning: no impact or fatigue loads
}

// Families are the six the analysts specialise in.
var Families = []Family{
	{Name: "metal", Grade: "aluminium 6061-T6 / low-alloy steel", Density: 2.7, Tensile: 310, Modulus: 69,
		MaxTemp: 170, Corrosion: 0.7, UV: 1, CostPerKg: 3.0, Manufacture: 0.85},
	{Name: "polymer", Grade: "glass-free nylon 6/6 and POM", Density: 1.14, Tensile: 70, Modulus: 2.8,
		MaxTemp: 100, Corrosion: 0.9, UV: 0.4, CostPerKg: 3.5, Manufacture: 0.95},
	{Name: "ceramic", Grade: "alumina (96% Al2O3)", Density: 3.7, Tensile: 300, Modulus: 300,
		MaxTemp: 1500, Corrosion: 1, UV: 1, CostPerKg: 25, Manufacture: 0.25, Brittle: true},
	{Name: "composite", Grade: "CFRP, quasi-isotropic epoxy laminate", Density: 1.55, Tensile: 600, Modulus: 60,
		MaxTemp: 140, Corrosion: 0.9, UV: 0.6, CostPerKg: 40, Manufacture: 0.35},
	{Name: "elastomer", Grade: "EPDM and silicone rubber", Density: 1.2, Tensile: 12, Modulus: 0.005,
		MaxTemp: 150, Corrosion: 0.9, UV: 0.9, CostPerKg: 5, Manufacture: 0.8},
	{Name: "wood", Grade: "hardwood (oak, ash), along the grain", Density: 0.7, Tensile: 90, Modulus: 12,
		MaxTemp: 80, Corrosion: 0.3, UV: 0.3, CostPerKg: 1.5, Manufacture: 0.7},
}

// family returns the family of that name.
func family(name string) (Family, bool) {
	for _, f := range Families {
		if f.Name == name {
			return f, true
		}
	}
	return Family{}, false
}
