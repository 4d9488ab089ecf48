import * as echarts from 'echarts/core';
import { CustomChart, GraphChart, TreeChart } from 'echarts/charts';
import { GridComponent, DataZoomComponent, TooltipComponent, TitleComponent, LegendComponent } from 'echarts/components';
import { CanvasRenderer } from 'echarts/renderers';
echarts.use([CustomChart, GraphChart, TreeChart, GridComponent, DataZoomComponent, TooltipComponent, TitleComponent, LegendComponent, CanvasRenderer]);
window.echarts = echarts;
